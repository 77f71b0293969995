"""ASGI middleware: request ids, limits on the body and on work in progress, one log line and metrics.

Pure ASGI (no ``BaseHTTPMiddleware``) so the hot path stays cheap.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import ApiKeys
from app.errors import ApiError, Overloaded, PayloadTooLarge, RequestTimeout, Unauthorized, error_response, is_v2
from app.metrics import Metrics

access_log = logging.getLogger("denoise.access")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# New request ids: a random per-process prefix and a counter (uuid4 costs a syscall per request).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def request_id(supplied: bytes) -> str:
    """The caller's ``X-Request-ID`` if it is valid, else a new one."""
    text = supplied.decode("latin-1")
    return text if _VALID_REQUEST_ID.match(text) else f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    body_timeout_s: float


class WorkInProgress:
    """Inference requests in progress in this worker, whichever front door (HTTP, gRPC) they came by."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def refusal(self) -> Overloaded | None:
        """The 503 for a new request when the limit is reached, else None."""
        if self.count < self.limit:
            return None
        return Overloaded(
            f"server busy: {self.count} requests in progress (DENOISE_MAX_INFLIGHT); retry shortly",
            headers={"Retry-After": "1"},
        )


class RequestContextMiddleware:
    """Outermost layer.

    - Request id: the caller's ``X-Request-ID`` if valid, else a new one; returned in the response.
    - API keys: where ``keys`` are set, a request to a path that needs one is answered 401 before
      anything else is done for it (:mod:`app.auth`).
    - Body size: refused from ``Content-Length`` before reading, and while a chunked body streams in.
    - Body deadline: the whole body must arrive within ``body_timeout_s`` of the request start (408).
    - Work in progress: at most ``max_inflight`` requests to the ``limited`` paths; more get 503 with
      ``Retry-After`` at once, so overload sheds instead of queueing without bound. Health and
      metrics are never limited.
    - One JSON access-log line and the request metrics.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        limits: Limits,
        work: WorkInProgress,
        keys: ApiKeys,
        endpoints: Collection[str],
        limited: Callable[[str], bool],
    ) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.limits = limits
        self.endpoints = endpoints
        self.limited = limited
        self.work = work

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        rid = request_id(headers.get(REQUEST_ID_HEADER, b""))
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid.encode())]
            await send(message)

        path: str = scope["path"]
        counted = self.limited(path)
        try:
            rejection = self._reject_early(path, headers, counted)
            if rejection is not None:
                if isinstance(rejection, Overloaded | Unauthorized):
                    # Read the (bounded) body first: closing a socket with unread data resets it,
                    # and the client would lose the answer (the 503's Retry-After, the 401's reason).
                    await _drain(self._guarded_receive(receive, started))
                await _send_error(send_with_id, rejection, rid, path)
                return
            if counted:
                self.work.count += 1
            try:
                await self.app(scope, self._guarded_receive(receive, started), send_with_id)
            finally:
                if counted:
                    self.work.count -= 1
        except ApiError as exc:  # raised while reading, outside a route's error handling
            if response_started:
                raise
            await _send_error(send_with_id, exc, rid, path)
        finally:
            self._record(scope, state, status, time.perf_counter() - started)

    def _reject_early(self, path: str, headers: dict[bytes, bytes], counted: bool) -> ApiError | None:
        if self.keys.required_for(path):
            try:
                self.keys.check(headers.get(b"authorization", b"").decode("latin-1"))
            except Unauthorized as exc:
                return exc
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limits.max_body_bytes):
            return PayloadTooLarge(self._too_large)
        return self.work.refusal() if counted else None

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
                message = await asyncio.wait_for(receive(), max(deadline - time.perf_counter(), 0.001))
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

    def _record(self, scope: Scope, state: dict[str, object], status: int, seconds: float) -> None:
        path = scope["path"]
        endpoint = str(state.get("endpoint") or (path if path in self.endpoints else "other"))
        record(
            self.metrics,
            protocol="v2" if is_v2(path) else "rest",
            request_id=str(state["request_id"]),
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b"").decode("latin-1")[:200],
            endpoint=endpoint,
            status=status,
            model=str(state.get("model", "-")),
            images=int(state.get("images", 0)),  # type: ignore[call-overload]
            seconds=seconds,
            client=(scope.get("client") or ("-",))[0],
        )


def record(
    metrics: Metrics,
    *,
    protocol: str,
    request_id: str,
    method: str,
    path: str,
    query: str,
    endpoint: str,
    status: int | str,
    model: str,
    images: int,
    seconds: float,
    client: str,
    error: bool = False,
) -> None:
    """The request's metrics and its one access-log line, for every protocol."""
    metrics.observe_request(endpoint, model, status, seconds, protocol, error)
    if access_log.isEnabledFor(logging.INFO):
        fields = {
            "request_id": request_id,
            "protocol": protocol,
            "method": method,
            "path": path,
            "query": query,
            "endpoint": endpoint,
            "status": status,
            "model": model,
            "images": images,
            "duration_ms": round(seconds * 1000, 3),
            "client": client,
        }
        access_log.info(
            "%s %s %s model=%s images=%d %.1f ms request_id=%s",
            method,
            path,
            status,
            model,
            images,
            fields["duration_ms"],
            request_id,
            extra=fields,
        )


async def _send_error(send: Send, error: ApiError, request_id: str, path: str) -> None:
    response = error_response(error, request_id, path)
    if error.status in (408, 413, 503):
        # 408/413: the rest of the body is not read. 503: shedding load, the connection goes too,
        # so a flood of clients pays for reconnecting instead of the event loop paying for answers.
        response.headers["connection"] = "close"
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
