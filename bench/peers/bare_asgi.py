"""A request's own cost, as a floor to measure against: a PNG decoded and encoded by the service's codec
(libpng through imagecodecs) around one ``session.run`` of the lean script's session, in a bare ASGI
callable, with no framework and no thread hand-off (the call runs on the event loop's thread). No
validation, routing, limits, batching, metrics or logs: what is left of a ``/denoise`` request is the HTTP
exchange, the PNG codec and the model.

    LEAN_MODEL=models/mnist/autoencoder.int8.onnx uvicorn bench.peers.bare_asgi:app --workers 2 --port 9000
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import imagecodecs
import numpy as np

from bench.peers.lean_fastapi import session

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def denoise_png(data: bytes) -> bytes:
    pixels = imagecodecs.png_decode(data).astype(np.float32) / 255.0
    (output,) = session.run(None, {"image": pixels[None, :, :, None]})
    return bytes(imagecodecs.png_encode((np.clip(output[0, :, :, 0], 0, 1) * 255 + 0.5).astype(np.uint8), level=1))


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
