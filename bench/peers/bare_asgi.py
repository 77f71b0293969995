"""A request's own cost, as a floor to measure against: a bare ASGI callable (no framework) that takes a raw
PNG body, decodes it with Pillow, runs the int8 graph on it at once on the event loop's thread (one
``session.run``, no thread hand-over), and answers the PNG. No validation, routing, limits, batching,
metrics or logs: what is left of a ``/denoise`` request is the HTTP exchange, the PNG codec and the model.

    BARE_MODEL=models/mnist/autoencoder.int8.onnx uvicorn bench.peers.bare_asgi:app --workers 2 --port 9000
"""

from __future__ import annotations

import io
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(
    os.environ.get("BARE_MODEL", "models/mnist/autoencoder.int8.onnx"), options, providers=["CPUExecutionProvider"]
)


def denoise_png(data: bytes) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0
    (output,) = session.run(None, {"image": pixels[None, :, :, None]})
    buffer = io.BytesIO()
    Image.fromarray((np.clip(output[0, :, :, 0], 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


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
