"""A request's own cost, as a floor to measure against: the lean script's work (lean_fastapi.py's
``denoise_png``: Pillow decode, one ``session.run``, Pillow encode) in a bare ASGI callable, with no
framework and no thread hand-off (the call runs on the event loop's thread). No validation, routing,
limits, batching, metrics or logs: what is left of a ``/denoise`` request is the HTTP exchange, the PNG
codec and the model.

    LEAN_MODEL=models/mnist/autoencoder.int8.onnx uvicorn bench.peers.bare_asgi:app --workers 2 --port 9000
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bench.peers.lean_fastapi import denoise_png

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":  # nothing to start or stop
        while True:
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "POST" and scope["path"] == "/denoise":
        status, content, kind = 200, denoise_png(body), b"image/png"
    else:
        status, content, kind = 200 if scope["path"] == "/health" else 404, b"", b"text/plain"
    headers = [(b"content-type", kind), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
