"""Hostile and unusual input: each gets the right 4xx with the common error body, never a 5xx."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import png as pypng
import pytest
from fastapi.testclient import TestClient

from tests.app.test_errors import assert_error, declared_png
from tests.conftest import REPO, decode_png, digit, png

PNG = {"content-type": "image/png"}


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def _assemble(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return out


def test_interlaced_png_is_decoded(client: TestClient) -> None:
    pixels = digit(1)
    buffer = io.BytesIO()
    pypng.Writer(28, 28, greyscale=True, interlace=True).write(buffer, pixels.tolist())
    data = buffer.getvalue()
    assert data[28] == 1  # the IHDR interlace byte: Adam7
    raw = client.post("/denoise", content=data, headers=PNG)
    plain = client.post("/denoise", content=png(pixels), headers=PNG)
    assert raw.status_code == 200
    assert raw.content == plain.content


def test_png_split_into_many_idat_chunks_is_decoded(client: TestClient) -> None:
    pixels = digit(2)
    chunks = _chunks(png(pixels))
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    pieces = [(b"IDAT", idat[i : i + 7]) for i in range(0, len(idat), 7)]
    split = [c for c in chunks if c[0] == b"IHDR"] + pieces + [(b"IEND", b"")]
    assert len(pieces) > 5
    response = client.post("/denoise", content=_assemble(split), headers=PNG)
    assert response.status_code == 200
    assert response.content == client.post("/denoise", content=png(pixels), headers=PNG).content


def test_image_data_failing_only_when_decoded_is_400(client: TestClient) -> None:
    """The header is valid (Pillow opens it lazily); the compressed data is garbage."""
    chunks = _chunks(png(digit(3)))
    broken = [(kind, b"\x78\x9c" + b"\xff" * 40 if kind == b"IDAT" else body) for kind, body in chunks]
    assert_error(client.post("/denoise", content=_assemble(broken), headers=PNG), 400, "undecodable_image")


def test_png_with_wrong_crc_is_400(client: TestClient) -> None:
    data = bytearray(png(digit(4)))
    data[29] ^= 0xFF  # inside the IHDR CRC
    assert_error(client.post("/denoise", content=bytes(data), headers=PNG), 400, "undecodable_image")


def test_decompression_bomb_without_resize_is_413_before_decoding(client: TestClient) -> None:
    assert_error(client.post("/denoise", content=declared_png(60000, 60000), headers=PNG), 413, "payload_too_large")


@pytest.mark.parametrize("query", ["", "?resize=true"])
def test_pillows_guard_answers_413_above_64_million_pixels_as_docs_api_says(client: TestClient, query: str) -> None:
    """docs/api.md: above 64 M pixels 413 either way; 60 M without resize is 422, with resize 413 (our limit)."""
    assert "more than 64 M pixels gets 413" in (REPO / "docs" / "api.md").read_text()
    assert_error(
        client.post(f"/denoise{query}", content=declared_png(7000, 10000), headers=PNG), 413, "payload_too_large"
    )
    below = client.post(f"/denoise{query}", content=declared_png(6000, 10000), headers=PNG)
    assert below.status_code == (413 if query else 422)


def test_large_declared_size_without_resize_is_422(client: TestClient) -> None:
    error = assert_error(client.post("/denoise", content=declared_png(5000, 5000), headers=PNG), 422, "invalid_input")
    assert "5000x5000" in error["message"]


@pytest.mark.parametrize(
    "content_type",
    ["image/jpeg", "text/plain", "application/json", "application/x-www-form-urlencoded", ""],
)
def test_content_types_that_lie_or_are_missing(client: TestClient, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/denoise", content=png(digit(5)), headers=headers)
    assert response.status_code in (415, 422)
    assert response.json()["error"]["message"]


def test_multipart_with_no_parts_is_400_or_422(client: TestClient) -> None:
    body = b"--xyz--\r\n"
    response = client.post("/denoise", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code in (400, 422)
    assert response.json()["error"]["code"] in ("bad_request", "invalid_input")


def test_multipart_without_boundary_is_400(client: TestClient) -> None:
    response = client.post("/denoise", content=b"abc", headers={"content-type": "multipart/form-data"})
    assert_error(response, 400, "bad_request")


def test_multipart_with_enormous_field_name(client: TestClient) -> None:
    name = "f" * 200_000
    response = client.post("/denoise", files={name: ("a.png", png(digit(6)), "image/png")})
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["message"]


def test_multipart_text_field_named_file_is_422(client: TestClient) -> None:
    response = client.post("/denoise", files={"file": (None, "not a file"), "other": (None, "x")})
    assert_error(response, 422, "invalid_input")


def test_too_many_images_is_413_on_every_front_door(client: TestClient) -> None:
    """The batch limit has one meaning everywhere: 413, naming the setting."""
    files = [("file", (f"{i}.png", png(digit(i)), "image/png")) for i in range(33)]  # limit 32 in tests
    response = client.post("/denoise", files=files)
    assert response.status_code == 413
    assert "Too many files" in response.json()["error"]["message"]
    latents = {"latent_shape": [7, 7, 8], "latents": [[0.0] * 392] * 33}
    response = client.post("/reconstruct", json=latents)
    assert response.status_code == 413
    assert "DENOISE_MAX_BATCH_IMAGES" in response.json()["error"]["message"]
    v2 = {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [33, 7, 7, 8], "data": [0.0] * 33 * 392}]}
    response = client.post("/v2/models/mnist-decoder/infer", json=v2)
    assert response.status_code == 413
    assert "DENOISE_MAX_BATCH_IMAGES" in response.json()["error"]


def test_second_of_two_files_bad_names_index_1(client: TestClient) -> None:
    files = [
        ("file", ("a.png", png(digit(7)), "image/png")),
        ("file", ("b.png", png(np.zeros((5, 5), np.uint8)), "image/png")),
    ]
    assert_error(client.post("/denoise", files=files), 422, "invalid_input", index=1)


@pytest.mark.parametrize(
    "body",
    [
        b'{"latent_shape": [7, 7, 8], "latents": [[[0.5]]]}',
        b'{"latent_shape": [7, 7, 8], "latents": "abc"}',
        b'{"latent_shape": "7x7x8", "latents": [[0.5]]}',
        b'{"latents": [[0.5]]}',
        b"[]",
        b"null",
        b'"text"',
        b'{"latent_shape": [7, 7, 8], "latents": [[1e308, -1e308]]}',
        b'{"latent_shape": [7, 7, 8], "latents": [[true, false]]}',
    ],
)
def test_malformed_latent_json_is_422(client: TestClient, body: bytes) -> None:
    response = client.post("/reconstruct", content=body, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_input")


def test_too_many_latents_is_413_and_none_is_422(client: TestClient) -> None:
    latent = [0.0] * 392
    body: dict[str, Any] = {"latent_shape": [7, 7, 8], "latents": [latent] * 33}
    assert_error(client.post("/reconstruct", json=body), 413, "payload_too_large")
    body["latents"] = []
    assert_error(client.post("/reconstruct", json=body), 422, "invalid_input")


def test_request_id_header_that_is_not_safe_is_replaced(client: TestClient) -> None:
    response = client.get("/health/live", headers={"x-request-id": "bad id\twith spaces" * 10})
    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) == 32


def test_query_parameter_of_wrong_type_is_422(client: TestClient) -> None:
    response = client.post("/denoise?resize=maybe", content=png(digit(8)), headers=PNG)
    assert_error(response, 422, "invalid_parameter")


def test_service_still_healthy_after_hostile_input(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 200
    decode_png(client.post("/denoise", content=png(digit(9)), headers=PNG).content)
