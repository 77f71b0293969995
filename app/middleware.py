"""ASGI middleware: body size limit while streaming, request ids, one log line and metrics per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, error_body
from app.metrics import Metrics

access_log = logging.getLogger("denoise.access")

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    """Outermost layer: request id, body limit, access log and metrics.

    The body limit is enforced from ``Content-Length`` before reading and, for
    chunked uploads, while the body streams in: the read stops at the limit.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, endpoints: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        supplied = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = supplied if _VALID_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        response_started = False
        limit = self.max_body_bytes
        received = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(self._too_large_message)
            return message

        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await self._reject_too_large(send_wrapper, request_id)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except PayloadTooLarge:  # raised while reading outside a route's error handling
            if response_started:
                raise
            await self._reject_too_large(send_wrapper, request_id)
        finally:
            path = scope["path"]
            endpoint = path if path in self.endpoints else "other"
            model = state.get("model", "-")
            seconds = time.perf_counter() - started
            self.metrics.observe_request(endpoint, model, status, seconds)
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": path,
                        "query": scope.get("query_string", b"").decode("latin-1")[:200],
                        "status": status,
                        "model": model,
                        "images": state.get("images", 0),
                        "duration_ms": round(seconds * 1000, 3),
                        "client": (scope.get("client") or ("-",))[0],
                    }
                )
            )

    @property
    def _too_large_message(self) -> str:
        return f"request body exceeds {self.max_body_bytes} bytes (DENOISE_MAX_BODY_BYTES)"

    async def _reject_too_large(self, send: Send, request_id: str) -> None:
        body = json.dumps(error_body(413, "payload_too_large", self._too_large_message, request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
