"""uvicorn's HTTP protocol with a header deadline and a liveness answer of its own.

- uvicorn times out idle keep-alive connections but not a client that connects and sends its
  request line and headers a byte at a time. This protocol closes a connection whose headers are
  not complete ``header_timeout`` seconds after the connection opened or the request began.
  (Body deadlines are enforced in :mod:`app.middleware`.)
- A request's line and headers are limited in total bytes (``DENOISE_MAX_HEADER_BYTES``) and in
  fields (``DENOISE_MAX_HEADERS``), counted while they stream in (httptools has no limit of its
  own and buffers a header line whole): beyond either the client gets ``431 Request Header Fields
  Too Large`` in the error shape of the path it asked for and the connection is closed, so memory
  stays bounded whatever a client sends before it is identified.
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
from app.errors import clip, render
from app.middleware import CLIENT_GONE, REQUEST_ID_HEADER
from app.schemas import Liveness

LIVENESS_PATH = b"/health/live"
LIVENESS_BODY = Liveness().model_dump_json().encode()
#: Seconds an idle keep-alive connection stays open once shutdown has begun.
IDLE_DRAIN_S = 1.0


class HeadersTooLarge(Exception):
    """Raised from a parser callback: the request's headers passed a limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Named to uvicorn by import path, so that every worker process builds its own."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, server_state, app_state, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.header_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self.max_headers = settings.max_headers
        self._header_bytes = 0  # of the request line and the header fields parsed so far
        self._unparsed = 0  # bytes fed since the request began, while its headers were incomplete
        self._began = False  # a request began in the data being fed
        self._too_large: str | None = None  # why a parser callback stopped the request
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
        self._began = True
        self._header_bytes = self._unparsed = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if len(self.headers) >= self.max_headers:
            self._stop(f"more than {self.max_headers} header fields (DENOISE_MAX_HEADERS)")
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._stop(f"request line and headers exceed {self.max_header_bytes} bytes (DENOISE_MAX_HEADER_BYTES)")

    def _stop(self, why: str) -> None:
        """Stop parsing from a callback: httptools turns the exception into a parser error, for which
        uvicorn calls :meth:`send_400_response`, answered here with 431."""
        self._too_large = why
        raise HeadersTooLarge(why)

    def send_400_response(self, msg: str) -> None:
        if self._too_large is None:
            super().send_400_response(msg)
        else:
            self._reject_headers(self._too_large)

    def data_received(self, data: bytes) -> None:
        self._began = False
        try:
            super().data_received(data)
            if self._receiving and not self._began:
                # httptools holds an incomplete header line until it ends: every byte fed while the headers
                # are incomplete belongs to them, so their total bounds what it holds.
                self._unparsed += len(data)
                if self._unparsed > self.max_header_bytes:
                    raise HeadersTooLarge(
                        f"request line and headers exceed {self.max_header_bytes} bytes (DENOISE_MAX_HEADER_BYTES)"
                    )
        except HeadersTooLarge as exc:
            self._reject_headers(str(exc))

    def _reject_headers(self, message: str) -> None:
        """431, in the error shape of the path asked for, and the connection closed."""
        self._disarm_header_timer()
        self._receiving = False
        path = clip(self.url.split(b"?", 1)[0].decode("latin-1"))
        self.logger.info("closing a connection whose request headers were too large (%s)", message)
        response = render(path, 431, "headers_too_large", f"{message}; send fewer or smaller headers", None)
        head = [
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(response.body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + bytes(response.body))
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        self._receiving = False
        self._unparsed = 0
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
