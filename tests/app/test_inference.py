"""/denoise, /encode and /reconstruct: success paths with exact shapes and types."""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np
from fastapi.testclient import TestClient

from tests.conftest import MODEL, decode_png, digit, png

PNG = {"content-type": "image/png"}


def test_denoise_raw_body_returns_grayscale_png(client: TestClient) -> None:
    response = client.post("/denoise", content=png(digit(1)), headers=PNG)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model"] == MODEL
    assert response.headers["x-request-id"]
    pixels = decode_png(response.content)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (28, 28)


def test_denoise_multipart_single_file_equals_raw_body(client: TestClient) -> None:
    image = png(digit(2))
    raw = client.post("/denoise", content=image, headers=PNG)
    multipart = client.post("/denoise", files={"file": ("a.png", image, "image/png")})
    assert multipart.status_code == 200
    assert multipart.headers["content-type"] == "image/png"
    assert multipart.content == raw.content


def test_denoise_batch_keeps_input_order(client: TestClient) -> None:
    images = [png(digit(seed)) for seed in range(10, 16)]
    singles = [client.post("/denoise", content=image, headers=PNG).content for image in images]
    response = client.post(
        "/denoise", files=[("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == MODEL
    assert body["count"] == len(images)
    batch = [decode_png(base64.b64decode(item)) for item in body["images"]]
    for got, single in zip(batch, singles, strict=True):
        assert np.abs(got.astype(int) - decode_png(single).astype(int)).max() <= 1


def test_denoise_batch_of_several_inference_batches_keeps_input_order(client: TestClient) -> None:
    """More images than one ONNX Runtime call takes (the test service's batch_max_size is 8): decoded and
    run a batch at a time, answered whole and in order, scores included."""
    images = [png(digit(seed)) for seed in range(20, 40)]
    singles = [client.post("/denoise", content=image, headers=PNG) for image in images]
    response = client.post(
        "/denoise", files=[("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
    )
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == len(images) == len(body["anomaly_scores"]) == len(body["anomalous"])
    for got, single, score in zip(body["images"], singles, body["anomaly_scores"], strict=True):
        assert np.abs(decode_png(base64.b64decode(got)).astype(int) - decode_png(single.content).astype(int)).max() <= 1
        assert abs(score - float(single.headers["x-anomaly-score"])) < 1e-3


def test_denoise_single_with_accept_json_returns_json(client: TestClient) -> None:
    response = client.post("/denoise", content=png(digit(3)), headers={**PNG, "accept": "application/json"})
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_denoise_output_differs_from_noisy_input(client: TestClient) -> None:
    noisy = digit(4)
    denoised = decode_png(client.post("/denoise", content=png(noisy), headers=PNG).content)
    assert not np.array_equal(noisy, denoised)


def test_encode_returns_float32_latents_with_manifest_shape(client: TestClient) -> None:
    manifest = client.get("/models").json()["models"][0]
    response = client.post("/encode", files=[("file", ("a.png", png(digit(s)), "image/png")) for s in (5, 6, 7)])
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == MODEL
    assert body["version"] == manifest["version"]
    assert body["latent_shape"] == manifest["latent_shape"]
    size = int(np.prod(body["latent_shape"]))
    assert size <= 392
    assert len(body["latents"]) == 3
    for latent in body["latents"]:
        assert len(latent) == size
        assert all(isinstance(v, float) for v in latent)
        # each value in float32's own shortest form: what reads back as the same float32, and no more digits
        assert [float(str(value)) for value in np.asarray(latent, dtype=np.float32)] == latent


def test_encode_then_reconstruct_equals_denoise(make_client: Callable[..., TestClient]) -> None:
    """In float32 (the encoder and decoder are float32 always); tolerance: 1 grey level, from float rounding
    between the composed and the split graphs."""
    client = make_client(int8=False)
    images = [png(digit(seed)) for seed in (20, 21, 22)]
    encoded = client.post("/encode", files=[("file", (f"{i}", im, "image/png")) for i, im in enumerate(images)])
    reconstructed = client.post("/reconstruct", json=encoded.json())
    assert reconstructed.status_code == 200
    denoised = client.post("/denoise", files=[("file", (f"{i}", im, "image/png")) for i, im in enumerate(images)])
    for a, b in zip(reconstructed.json()["images"], denoised.json()["images"], strict=True):
        diff = decode_png(base64.b64decode(a)).astype(int) - decode_png(base64.b64decode(b)).astype(int)
        assert np.abs(diff).max() <= 1


def test_reconstruct_single_latent_returns_png(client: TestClient) -> None:
    encoded = client.post("/encode", content=png(digit(30)), headers=PNG).json()
    response = client.post("/reconstruct", json=encoded)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    decode_png(response.content)


def test_reconstruct_with_image_runs_the_autoencoder(client: TestClient) -> None:
    image = png(digit(31))
    via_reconstruct = client.post("/reconstruct", content=image, headers=PNG)
    via_denoise = client.post("/denoise", content=image, headers=PNG)
    assert via_reconstruct.status_code == 200
    assert via_reconstruct.content == via_denoise.content


def test_reconstruct_takes_model_from_body(client: TestClient) -> None:
    encoded = client.post("/encode", content=png(digit(32)), headers=PNG).json()
    encoded["model"] = MODEL
    assert client.post(f"/reconstruct?model={MODEL}", json=encoded).status_code == 200


def test_invert_option_matches_inverting_the_upload(client: TestClient) -> None:
    light_on_dark = digit(33)
    inverted = client.post("/denoise?invert=true", content=png(255 - light_on_dark), headers=PNG)
    direct = client.post("/denoise", content=png(light_on_dark), headers=PNG)
    assert inverted.status_code == 200
    assert inverted.content == direct.content


def test_resize_option_accepts_other_sizes(client: TestClient) -> None:
    big = np.kron(digit(34), np.ones((2, 2), dtype=np.uint8))
    response = client.post("/denoise?resize=true", content=png(big), headers=PNG)
    assert response.status_code == 200
    decode_png(response.content)
