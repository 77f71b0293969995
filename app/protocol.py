"""uvicorn's HTTP protocol with a header deadline and a liveness answer of its own.

- uvicorn times out idle keep-alive connections but not a client that connects and sends its
  request line and headers a byte at a time. This protocol closes a connection whose headers are
  not complete ``header_timeout`` seconds after the connection opened or the request began.
  (Body deadlines are enforced in :mod:`app.middleware`.)
- ``GET /health/live`` is answered here, as soon as the request is parsed, without starting an
  ASGI task: under overload the event loop has hundreds of tasks ready, and a probe that waited
  for its own task's turn would wait behind all of them. The answer is the same as the route's
  (``{"status":"alive"}`` with an ``X-Request-ID``); it is not logged and not counted in the metrics.
- Each request's scope carries its connection's ``is_closing`` check (``state["client_gone"]``, read
  by :mod:`app.middleware`): work still queued for a client that has closed its connection is dropped.
- On shutdown uvicorn closes idle keep-alive connections at once, and a request a client sent on
  one at that instant meets a connection reset, lost though the service never saw it. Here an idle
  connection stays open for :data:`IDLE_DRAIN_S` more: a request arriving meanwhile is answered
  with ``Connection: close``, and the connection is closed once idle.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.config import get_settings
from app.context import request_id
from app.middleware import CLIENT_GONE, REQUEST_ID_HEADER
from app.schemas import Liveness

LIVENESS_PATH = b"/health/live"
LIVENESS_BODY = Liveness().model_dump_json().encode()
#: Seconds an idle keep-alive connection stays open once shutdown has begun.
IDLE_DRAIN_S = 1.0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Named to uvicorn by import path, so that every worker process builds its own."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        self.header_timeout = get_settings().header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._liveness_probe = False
        self._receiving = False  # a request has begun and its headers are not complete yet
        self._draining = False

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers took over %.0f s", self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        self._receiving = False
        # Only when no earlier request on this connection is still being answered, so that
        # pipelined responses keep their order.
        self._liveness_probe = (
            self.url == LIVENESS_PATH
            and self.parser.get_method() == b"GET"
            and not self.parser.should_upgrade()
            and (self.cycle is None or self.cycle.response_complete)
        )
        if not self._liveness_probe:
            self.scope["state"][CLIENT_GONE] = self.transport.is_closing
            super().on_headers_complete()
            if self._draining and self.cycle is not None:
                self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self._liveness_probe:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._liveness_probe:
            super().on_message_complete()
            return
        self._liveness_probe = False
        keep_alive = not self._draining and self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        supplied = next((value for name, value in self.headers if name == REQUEST_ID_HEADER), b"")
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(LIVENESS_BODY)).encode()),
            (REQUEST_ID_HEADER, request_id(supplied.decode("latin-1")).encode()),
        ]
        if not keep_alive:
            headers.append((b"connection", b"close"))
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + LIVENESS_BODY)
        if keep_alive:
            self.on_response_complete()
        else:
            self.transport.close()

    def shutdown(self) -> None:
        self._draining = True
        if self._idle():
            self.loop.call_later(IDLE_DRAIN_S, self._close_if_idle)
        elif self.cycle is not None:
            self.cycle.keep_alive = False

    def _idle(self) -> bool:
        return not self._receiving and (self.cycle is None or self.cycle.response_complete)

    def _close_if_idle(self) -> None:
        if self._idle() and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)
