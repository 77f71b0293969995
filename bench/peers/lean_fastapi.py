"""The lean service a user could write in an afternoon: FastAPI + onnxruntime, a raw PNG body in, Pillow,
one ``session.run`` in the thread pool, a PNG out. No validation, batching, limits, metrics or logs.

    LEAN_MODEL=models/mnist/autoencoder.onnx uvicorn bench.peers.lean_fastapi:app --workers 2 --port 9000
"""

from __future__ import annotations

import io
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

options = ort.SessionOptions()
options.intra_op_num_threads = 1  # one per worker process, as a competent user would set with 2 workers
session = ort.InferenceSession(
    os.environ.get("LEAN_MODEL", "models/mnist/autoencoder.onnx"), options, providers=["CPUExecutionProvider"]
)
app = FastAPI()


def denoise_png(data: bytes) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0
    (output,) = session.run(None, {"image": pixels[None, :, :, None]})
    buffer = io.BytesIO()
    Image.fromarray((np.clip(output[0, :, :, 0], 0, 1) * 255 + 0.5).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@app.post("/denoise")
async def denoise(request: Request) -> Response:
    return Response(await run_in_threadpool(denoise_png, await request.body()), media_type="image/png")
