"""The service a reader of the tutorials would write, kept here only as the benchmark's baseline.

Keras ``model.predict`` per request, behind a multipart ``UploadFile`` endpoint, the model loaded
at import. Run: ``NAIVE_MODEL=path.keras uvicorn bench.naive_service:app``.
"""

from __future__ import annotations

import io
import os

import keras
import numpy as np
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import Response
from PIL import Image

model = keras.models.load_model(os.environ["NAIVE_MODEL"], compile=False)  # predict needs no loss
app = FastAPI()


@app.post("/denoise")
async def denoise(file: UploadFile = File(...)) -> Response:  # noqa: B008 - the tutorials' style
    data = await file.read()
    x = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype="float32") / 255.0
    y = model.predict(x[None, ..., None], verbose=0)
    buffer = io.BytesIO()
    Image.fromarray((y[0, ..., 0] * 255).astype("uint8")).save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")
