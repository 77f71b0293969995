"""The image pipeline behind every front door: large uploads are decoded off the event loop."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import imaging, pipeline
from app.imaging import DecodeOptions
from tests.conftest import MODEL, png

#: A 400x400 scan of noise: well above the size decoded on the loop.
SCAN = png(np.random.default_rng(0).integers(0, 256, size=(400, 400), dtype=np.uint8))
assert len(SCAN) > pipeline.THREAD_DECODE_BYTES


def _v2(client: TestClient) -> int:
    body = {
        "inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(SCAN).decode()]}],
        "parameters": {"resize": True},
    }
    status: int = client.post(f"/v2/models/{MODEL}/infer", json=body).status_code
    return status


def _denoise(client: TestClient) -> int:
    status: int = client.post("/denoise?resize=true", content=SCAN, headers={"content-type": "image/png"}).status_code
    return status


@pytest.mark.parametrize("send", [_v2, _denoise], ids=["v2", "denoise"])
def test_a_large_upload_is_decoded_while_the_loop_answers_others(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, send: Callable[[TestClient], int]
) -> None:
    entered, release = threading.Event(), threading.Event()
    original = imaging.decode

    def held_decode(data: bytes, options: DecodeOptions, index: int | None = None) -> np.ndarray:
        entered.set()
        release.wait(timeout=10)  # on the event loop this would hold every other request this long
        return original(data, options, index)

    monkeypatch.setattr(pipeline, "decode", held_decode)
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.append(send(client)))
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
