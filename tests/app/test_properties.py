"""Property-based tests: whatever a client sends, never a 5xx, always the common error body."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import decode_png

ENDPOINTS = ["/denoise", "/encode", "/reconstruct"]
CONTENT_TYPES = [
    "image/png",
    "application/octet-stream",
    "application/json",
    "multipart/form-data; boundary=abc",
    "text/plain",
    "image/jpeg",
    "",
]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_well_formed(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["status"] == response.status_code
        assert isinstance(error["message"], str)
        assert error["message"]
        assert error["request_id"] == response.headers["x-request-id"]


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=st.one_of(st.binary(max_size=2048), st.just(b"\x89PNG\r\n\x1a\n").map(lambda s: s + bytes(30))),
    content_type=st.sampled_from(CONTENT_TYPES),
    query=st.sampled_from(["", "?resize=true", "?invert=1", "?model=", "?model=%00", "?resize=yes"]),
)
def test_random_bytes_never_cause_5xx(
    client: TestClient, endpoint: str, body: bytes, content_type: str, query: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    assert_well_formed(client.post(endpoint + query, content=body, headers=headers))


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]


@st.composite
def png_images(draw: st.DrawFn) -> tuple[bytes, tuple[int, int]]:
    mode = draw(st.sampled_from(MODES))
    width = draw(st.sampled_from([1, 7, 27, 28, 29, 56]))
    height = draw(st.sampled_from([1, 28, 40]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, size=(height, width), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, size=(height, width)).astype(np.uint16))
    else:
        image = base.convert(mode)
    buffer = io.BytesIO()
    extra: dict[str, Any] = {"transparency": 0} if mode == "P" and seed % 2 else {}
    image.save(buffer, format="PNG", **extra)
    return buffer.getvalue(), (width, height)


@FUZZ
@given(image=png_images(), endpoint=st.sampled_from(ENDPOINTS), resize=st.booleans(), invert=st.booleans())
def test_random_valid_pngs_of_any_mode_and_size(
    client: TestClient, image: tuple[bytes, tuple[int, int]], endpoint: str, resize: bool, invert: bool
) -> None:
    data, size = image
    params = {"resize": str(resize).lower(), "invert": str(invert).lower()}
    response = client.post(endpoint, content=data, params=params, headers={"content-type": "image/png"})
    assert_well_formed(response)
    if size == (28, 28) or resize:
        assert response.status_code == 200
        if endpoint != "/encode":
            decode_png(response.content)
    else:
        assert response.status_code == 422


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=60,
)


@FUZZ
@given(
    value=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"latent_shape": st.lists(st.integers(-2, 10), max_size=4), "latents": json_values},
            optional={"model": json_values, "version": json_values},
        ),
    )
)
def test_random_json_to_reconstruct_is_4xx(client: TestClient, value: Any) -> None:
    body = json.dumps(value, allow_nan=True).encode()
    response = client.post("/reconstruct", content=body, headers={"content-type": "application/json"})
    assert_well_formed(response)
    assert 400 <= response.status_code < 500


def test_still_healthy_after_fuzzing(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 200
