"""Every error status, triggered by a real bad request, with the common error body."""

from __future__ import annotations

import io
import json
import struct
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import digit, png

PNG = {"content-type": "image/png"}


def assert_error(response: httpx.Response, status: int, code: str, *, index: int | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    # One shape, byte for byte the same style wherever the error was raised (routes or middleware).
    assert response.content == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    error = body["error"]
    assert list(error)[:4] == ["status", "code", "message", "request_id"]
    assert error["status"] == status
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if index is not None:
        assert error["index"] == index
    return dict(error)


def declared_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_undecodable_body_is_400(client: TestClient) -> None:
    assert_error(client.post("/denoise", content=b"not an image at all", headers=PNG), 400, "undecodable_image")


def test_truncated_png_is_400(client: TestClient) -> None:
    data = png(digit(1))
    assert_error(client.post("/denoise", content=data[: len(data) // 2], headers=PNG), 400, "undecodable_image")


def test_empty_body_is_400(client: TestClient) -> None:
    assert_error(client.post("/denoise", content=b"", headers=PNG), 400, "undecodable_image")


def test_body_over_limit_is_413(make_client: Any) -> None:
    small = make_client(max_body_bytes=2048)
    assert_error(small.post("/denoise", content=b"\0" * 4096, headers=PNG), 413, "payload_too_large")


def test_streamed_body_over_limit_is_413(make_client: Any) -> None:
    small = make_client(max_body_bytes=2048)

    def chunks() -> Any:
        for _ in range(8):
            yield b"\0" * 1024

    assert_error(small.post("/denoise", content=chunks(), headers=PNG), 413, "payload_too_large")


def test_pixel_count_over_limit_is_413_before_decoding(client: TestClient) -> None:
    response = client.post("/denoise?resize=true", content=declared_png(60000, 60000), headers=PNG)
    assert_error(response, 413, "payload_too_large")


def test_wrong_media_type_is_415(client: TestClient) -> None:
    error = assert_error(
        client.post("/denoise", content=png(digit(2)), headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert "image/png" in error["message"]


def test_jpeg_body_is_415_even_when_labelled_png(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(digit(3)).save(buffer, format="JPEG")
    error = assert_error(client.post("/denoise", content=buffer.getvalue(), headers=PNG), 415, "unsupported_media_type")
    assert "JPEG" in error["message"]


def test_wrong_size_is_422(client: TestClient) -> None:
    error = assert_error(
        client.post("/denoise", content=png(np.zeros((32, 32), np.uint8)), headers=PNG), 422, "invalid_input"
    )
    assert "32x32" in error["message"]
    assert "resize=true" in error["message"]


def test_bad_item_in_batch_is_named_by_index(client: TestClient) -> None:
    files = [
        ("file", ("ok.png", png(digit(4)), "image/png")),
        ("file", ("bad.png", b"garbage", "image/png")),
    ]
    assert_error(client.post("/denoise", files=files), 400, "undecodable_image", index=1)


def test_bad_item_in_a_later_inference_batch_is_named_by_its_index_in_the_request(client: TestClient) -> None:
    """With more images than one ONNX Runtime call takes (8 here), decoding goes a batch at a time: the index
    still counts from the request's first image."""
    files = [("file", (f"{i}.png", png(digit(i)), "image/png")) for i in range(20)]
    files[13] = ("file", ("13.png", b"not a png", "image/png"))
    assert_error(client.post("/denoise", files=files), 400, "undecodable_image", index=13)
    assert client.post("/denoise", files=files[:13]).status_code == 200  # and the service carries on


def test_multipart_without_file_field_is_422(client: TestClient) -> None:
    assert_error(client.post("/denoise", data={"other": "x"}, files={"image": ("a.png", b"x")}), 422, "invalid_input")


def test_unknown_model_is_404(client: TestClient) -> None:
    error = assert_error(client.post("/denoise?model=nope", content=png(digit(5)), headers=PNG), 404, "model_not_found")
    assert "mnist" in error["message"]


def test_unknown_path_is_404(client: TestClient) -> None:
    assert_error(client.get("/nothing-here"), 404, "not_found")


def test_wrong_method_is_405(client: TestClient) -> None:
    assert_error(client.get("/denoise"), 405, "method_not_allowed")


@pytest.fixture(scope="module")
def latents(client: TestClient) -> dict[str, Any]:
    return dict(client.post("/encode", content=png(digit(6)), headers=PNG).json())


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b.update(latent_shape=[7, 7, 9]), "invalid_input"),
        (lambda b: b.update(latents=[b["latents"][0][:-1]]), "invalid_input"),
        (lambda b: b.update(latents=[[*b["latents"][0], 0.0]]), "invalid_input"),
        (lambda b: b.update(latents=[]), "invalid_input"),
        (lambda b: b.update(latents=b["latents"][0]), "invalid_input"),
        (lambda b: b.update(latents=[["0.5"] * len(b["latents"][0])]), "invalid_input"),
        (lambda b: b.update(latents=[[1e39] * len(b["latents"][0])]), "invalid_input"),
        (lambda b: b.update(version="0.0.0-other"), "invalid_input"),
        (lambda b: b.update(unexpected=1), "invalid_input"),
    ],
    ids=["shape", "short", "long", "empty", "flat", "strings", "beyond-float32", "version", "extra-field"],
)
def test_invalid_latents_are_422(client: TestClient, latents: dict[str, Any], mutate: Any, code: str) -> None:
    body = {**latents, "latents": [list(latents["latents"][0])]}
    mutate(body)
    assert_error(client.post("/reconstruct", json=body), 422, code)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_latents_are_422(client: TestClient, literal: bytes) -> None:
    values = b",".join([literal] + [b"0"] * 391)
    body = b'{"latent_shape": [7, 7, 8], "latents": [[' + values + b"]]}"
    response = client.post("/reconstruct", content=body, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_input")


def test_invalid_json_is_400(client: TestClient) -> None:
    response = client.post("/reconstruct", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_request")


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    response = client.post("/reconstruct", content=b"[" * 50_000, headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_request")


def test_not_ready_is_503(make_client: Any, tmp_path: Any) -> None:
    empty = make_client(model_dir=tmp_path, models="")
    assert empty.get("/health/ready").status_code == 503
    assert_error(empty.post("/denoise", content=png(digit(7)), headers=PNG), 503, "not_ready")
