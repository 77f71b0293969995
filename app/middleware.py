"""The HTTP front door's request context: one pure ASGI middleware (no ``BaseHTTPMiddleware``, so the
hot path stays cheap) around the app.

- Request id: the caller's ``X-Request-ID`` if valid, else a new one; returned in the response.
- A :class:`~app.context.RequestContext` for the request, in ``scope["state"]["context"]``; the
  matched route applies its policy to it (:mod:`app.routing`).
- Body size: refused from ``Content-Length`` before reading, and while a chunked body streams in.
- Body deadline: the whole body must arrive within ``body_timeout_s`` of the request start (408).
- Whether the client is still there: :mod:`app.protocol` puts its connection's check in the scope
  (``state["client_gone"]``), and work queued for a request whose client has gone is dropped.
- At the end, the context's metrics and access-log line.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.context import RequestContext, Services, request_id
from app.errors import ApiError, BadRequestBody, PayloadTooLarge, RequestTimeout, error_response, is_v2

REQUEST_ID_HEADER = b"x-request-id"
#: The caller's deadline in milliseconds from now: the header Envoy (and Istio) set on every request
#: they route to a service with a timeout, so a mesh's route timeout reaches the service unchanged.
TIMEOUT_HEADER = b"x-envoy-expected-rq-timeout-ms"
#: The scope's ``state`` key under which the HTTP protocol gives a check for a closed connection.
CLIENT_GONE = "client_gone"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    body_timeout_s: float


class RequestContextMiddleware:
    """Outermost layer of the HTTP front door."""

    def __init__(self, app: ASGIApp, *, services: Services, limits: Limits) -> None:
        self.app = app
        self.services = services
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        path: str = scope["path"]
        context = RequestContext(
            self.services,
            protocol="v2" if is_v2(path) else "rest",
            request_id=request_id(headers.get(REQUEST_ID_HEADER, b"").decode("latin-1")),
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b"").decode("latin-1")[:200],
            client=(scope.get("client") or ("-",))[0],
            started=started,
        )
        rid = context.request_id
        state = scope.setdefault("state", {})
        if CLIENT_GONE in state:
            context.gone = state[CLIENT_GONE]
        state["request_id"] = rid
        state["context"] = context
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                context.describe_span()
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid.encode())]
            await send(message)

        try:
            timeout = headers.get(TIMEOUT_HEADER)
            if timeout is not None:
                context.deadline = _deadline(timeout, context.received)
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limits.max_body_bytes):
                await _send_error(send_with_id, PayloadTooLarge(self._too_large), rid, path)
                return
            await self.app(scope, self._guarded_receive(receive, started), send_with_id)
        except ApiError as exc:  # raised while reading, outside a route's error handling
            if response_started:
                raise
            await _send_error(send_with_id, exc, rid, path)
        finally:
            context.finish(status)

    @property
    def _too_large(self) -> str:
        return f"request body exceeds {self.limits.max_body_bytes} bytes (DENOISE_MAX_BODY_BYTES)"

    def _guarded_receive(self, receive: Receive, started: float) -> Receive:
        """``receive`` that enforces the body size and the body deadline while the body streams in."""
        received = 0
        body_done = False
        deadline = started + self.limits.body_timeout_s

        async def guarded() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                # asyncio.timeout, not wait_for: no task made per message (in Python 3.11 wait_for makes one)
                async with asyncio.timeout(max(deadline - time.perf_counter(), 0.001)):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"request body not received within {self.limits.body_timeout_s:g} s (DENOISE_BODY_TIMEOUT_S)"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limits.max_body_bytes:
                    raise PayloadTooLarge(self._too_large)
                body_done = not message.get("more_body", False)
            return message

        return guarded


def _deadline(timeout: bytes, received: float) -> float | None:
    """The deadline an ``X-Envoy-Expected-Rq-Timeout-Ms`` value sets (0: none, as in Envoy)."""
    if not timeout.isdigit() or len(timeout) > 12:
        shown = timeout[:20].decode("latin-1")
        raise BadRequestBody(
            f"X-Envoy-Expected-Rq-Timeout-Ms must be whole milliseconds (0 for no deadline), got {shown!r}"
        )
    milliseconds = int(timeout)
    return received + milliseconds / 1000 if milliseconds else None


async def _send_error(send: Send, error: ApiError, request_id: str, path: str) -> None:
    response = error_response(error, request_id, path)
    if error.status in (408, 413):  # the rest of the body is not read: the connection cannot be reused
        response.headers["connection"] = "close"
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
