"""The image pipeline behind every front door: large uploads are decoded off the event loop."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import imaging, pipeline
from app.imaging import DecodeOptions
from tests.conftest import MODEL, png

#: A 1100x1100 scan of noise: above the pixels decoded on the loop.
SCAN = png(np.random.default_rng(0).integers(0, 256, size=(1100, 1100), dtype=np.uint8))


def _one_bit_blank(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")
    return buffer.getvalue()


#: A few hundred bytes declaring millions of pixels: cheap on the wire, seconds to decode in bulk.
BLANK = _one_bit_blank(2000)
assert len(BLANK) < 1000
assert imaging.declared_pixels(BLANK) == 4_000_000 > pipeline.THREAD_DECODE_PIXELS


def _v2(client: TestClient, upload: bytes) -> int:
    body = {
        "inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(upload).decode()]}],
        "parameters": {"resize": True},
    }
    status: int = client.post(f"/v2/models/{MODEL}/infer", json=body).status_code
    return status


def _denoise(client: TestClient, upload: bytes) -> int:
    response = client.post("/denoise?resize=true", content=upload, headers={"content-type": "image/png"})
    status: int = response.status_code
    return status


def test_declared_pixels_reads_the_png_header_only() -> None:
    assert imaging.declared_pixels(png(np.zeros((28, 28), dtype=np.uint8))) == 784
    assert imaging.declared_pixels(SCAN[:24]) == 1_210_000
    assert imaging.declared_pixels(b"GIF89a" + bytes(30)) is None
    assert imaging.declared_pixels(SCAN[:20]) is None


def test_small_uploads_decode_on_the_loop_and_anything_unknown_off_it() -> None:
    small = png(np.zeros((56, 56), dtype=np.uint8))
    assert pipeline._decode_cost([small] * 10) <= pipeline.THREAD_DECODE_PIXELS
    assert pipeline._decode_cost([BLANK]) > pipeline.THREAD_DECODE_PIXELS
    assert pipeline._decode_cost([b"not a png"]) > pipeline.THREAD_DECODE_PIXELS


@pytest.mark.parametrize("upload", [SCAN, BLANK], ids=["noisy-scan", "one-bit-blank"])
@pytest.mark.parametrize("send", [_v2, _denoise], ids=["v2", "denoise"])
def test_a_large_upload_is_decoded_while_the_loop_answers_others(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, send: Callable[[TestClient, bytes], int], upload: bytes
) -> None:
    entered, release = threading.Event(), threading.Event()
    original = imaging.decode

    def held_decode(data: bytes, options: DecodeOptions, index: int | None = None) -> np.ndarray:
        entered.set()
        release.wait(timeout=10)  # on the event loop this would hold every other request this long
        return original(data, options, index)

    monkeypatch.setattr(pipeline, "decode", held_decode)
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.append(send(client, upload)))
    sender.start()
    try:
        assert entered.wait(timeout=10)
        started = time.monotonic()
        assert client.get("/health/live").status_code == 200
        assert time.monotonic() - started < 5
    finally:
        release.set()
        sender.join(timeout=30)
    assert statuses == [200]
