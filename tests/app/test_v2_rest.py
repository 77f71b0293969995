"""The Open Inference Protocol over REST, driven by Triton's own clients (sync and asyncio) against a
real server, and every malformed request answered 4xx in V2's error shape."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_aio
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from tests.conftest import MODEL, decode_png, digit, png
from tests.server import TEST_SETTINGS, running_server

GRAPH_MODELS = [f"{MODEL}-autoencoder", f"{MODEL}-encoder", f"{MODEL}-decoder"]
ALL_MODELS = [MODEL, *GRAPH_MODELS]
IMAGES = [png(digit(seed)) for seed in (3, 4, 5)]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server({**TEST_SETTINGS, "DENOISE_BATCH_MAX_DELAY_MS": "0"}) as (url, _):
        yield url


@pytest.fixture(scope="module")
def triton(server: str) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.removeprefix("http://"))


def own_api(server: str, path: str, **kwargs: Any) -> httpx.Response:
    response = httpx.post(f"{server}{path}", timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return response


def batch_files() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(IMAGES)]


def pixels_of(model_input: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(model_input[..., 0], 0, 1) * 255 + 0.5, dtype=np.uint8)


def images_array() -> np.ndarray:
    return np.stack([decode_png(image) for image in IMAGES]).astype(np.float32)[..., None] / 255


def test_server_health_and_metadata(triton: triton_http.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "denoise"
    assert {"binary_tensor_data", "model_configuration", "model_repository"} <= set(metadata["extensions"])


def test_model_readiness_including_unknown(triton: triton_http.InferenceServerClient) -> None:
    for name in ALL_MODELS:
        assert triton.is_model_ready(name)
    assert not triton.is_model_ready("no-such-model")
    assert not triton.is_model_ready(MODEL, model_version="999")


def test_repository_index_lists_every_model(triton: triton_http.InferenceServerClient) -> None:
    index = triton.get_model_repository_index()
    assert {entry["name"] for entry in index} == set(ALL_MODELS)
    assert {entry["state"] for entry in index} == {"READY"}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_metadata_and_config(triton: triton_http.InferenceServerClient, name: str) -> None:
    manifest_version = triton.get_model_metadata(MODEL)["versions"][0]
    metadata = triton.get_model_metadata(name, model_version=manifest_version)
    assert metadata["name"] == name
    assert metadata["platform"] == "onnxruntime_onnx"
    assert all(tensor["shape"][0] == -1 for tensor in metadata["inputs"] + metadata["outputs"])
    config = triton.get_model_config(name)
    assert config["name"] == name
    assert config["max_batch_size"] == int(TEST_SETTINGS["DENOISE_MAX_BATCH_IMAGES"])
    assert [t["name"] for t in config["input"]] == [t["name"] for t in metadata["inputs"]]
    assert [t["name"] for t in config["output"]] == [t["name"] for t in metadata["outputs"]]


def test_unknown_model_metadata_is_an_error(triton: triton_http.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        triton.get_model_metadata("nope")


def _infer(
    triton: triton_http.InferenceServerClient,
    model: str,
    name: str,
    data: np.ndarray,
    binary_in: bool,
    outputs: list[str],
    binary_out: bool,
) -> dict[str, np.ndarray]:
    datatype = "BYTES" if data.dtype == np.object_ else "FP32"
    tensor = triton_http.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary_in)
    requested = [triton_http.InferRequestedOutput(o, binary_data=binary_out) for o in outputs]
    result = triton.infer(model, [tensor], outputs=requested, request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    return {o: result.as_numpy(o) for o in outputs}


COMBINATIONS = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize(("binary_in", "binary_out"), COMBINATIONS)
def test_autoencoder_equals_denoise(
    triton: triton_http.InferenceServerClient, server: str, binary_in: bool, binary_out: bool
) -> None:
    out = _infer(
        triton, f"{MODEL}-autoencoder", "image", images_array(), binary_in, ["denoised", "anomaly_score"], binary_out
    )
    body = own_api(server, "/denoise", files=batch_files()).json()
    expected = np.stack([decode_png(base64.b64decode(item)) for item in body["images"]])
    assert np.abs(pixels_of(out["denoised"]).astype(int) - expected).max() <= 1  # PNG rounding only
    assert np.allclose(out["anomaly_score"][:, 0], body["anomaly_scores"], atol=1e-4)


@pytest.mark.parametrize(("binary_in", "binary_out"), COMBINATIONS)
def test_encoder_and_decoder_equal_encode_and_reconstruct(
    triton: triton_http.InferenceServerClient, server: str, binary_in: bool, binary_out: bool
) -> None:
    latents = _infer(triton, f"{MODEL}-encoder", "image", images_array(), binary_in, ["latent"], binary_out)["latent"]
    encoded = own_api(server, "/encode", files=batch_files()).json()
    assert np.allclose(latents.reshape(len(IMAGES), -1), encoded["latents"], atol=1e-5)
    decoded = _infer(triton, f"{MODEL}-decoder", "latent", latents, binary_in, ["denoised"], binary_out)["denoised"]
    rebuilt = own_api(server, "/reconstruct", json=encoded).json()
    expected = np.stack([decode_png(base64.b64decode(item)) for item in rebuilt["images"]])
    assert np.abs(pixels_of(decoded).astype(int) - expected).max() <= 1


@pytest.mark.parametrize(("binary_in", "binary_out"), COMBINATIONS)
def test_png_model_equals_denoise(
    triton: triton_http.InferenceServerClient, server: str, binary_in: bool, binary_out: bool
) -> None:
    """Raw PNG bytes in binary form; base64 text of them in JSON (BYTES in JSON are strings)."""
    if binary_in:
        data = np.array(IMAGES, dtype=np.object_)
    else:
        data = np.array([base64.b64encode(image).decode() for image in IMAGES], dtype=np.object_)
    out = _infer(triton, MODEL, "png", data, binary_in, ["denoised_png", "anomaly_score"], binary_out)
    pngs = [bytes(item) if binary_out else base64.b64decode(item) for item in out["denoised_png"]]
    body = own_api(server, "/denoise", files=batch_files()).json()
    assert [decode_png(p).tolist() for p in pngs] == [
        decode_png(base64.b64decode(item)).tolist() for item in body["images"]
    ]
    assert out["anomaly_score"].shape == (len(IMAGES), 1)


def test_no_outputs_requested_returns_all_binary_and_gzip_bodies_are_read(
    triton: triton_http.InferenceServerClient,
) -> None:
    tensor = triton_http.InferInput("image", [1, 28, 28, 1], "FP32")
    tensor.set_data_from_numpy(images_array()[:1])
    result = triton.infer(f"{MODEL}-autoencoder", [tensor], request_compression_algorithm="gzip")
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert set(outputs) == {"denoised", "anomaly_score"}
    assert all("binary_data_size" in o["parameters"] for o in outputs.values())
    assert result.as_numpy("denoised").shape == (1, 28, 28, 1)


def test_asyncio_client(server: str) -> None:
    async def scenario() -> tuple[bool, dict[str, Any], np.ndarray]:
        client = triton_aio.InferenceServerClient(server.removeprefix("http://"))
        try:
            ready = await client.is_model_ready(MODEL)
            metadata = await client.get_model_metadata(f"{MODEL}-encoder")
            for binary in (True, False):
                tensor = triton_aio.InferInput("png", [len(IMAGES)], "BYTES")
                if binary:
                    tensor.set_data_from_numpy(np.array(IMAGES, dtype=np.object_))
                else:
                    encoded = [base64.b64encode(image).decode() for image in IMAGES]
                    tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
                result = await client.infer(MODEL, [tensor])
                pngs = result.as_numpy("denoised_png")
            return ready, metadata, pngs
        finally:
            await client.close()

    ready, metadata, pngs = asyncio.run(scenario())
    assert ready
    assert metadata["outputs"][0]["name"] == "latent"
    assert all(decode_png(bytes(p)).shape == (28, 28) for p in pngs)


def test_v2_and_denoise_share_one_onnx_runtime_batch() -> None:
    """With a batching window, a V2 request and a /denoise request arriving together run as one call."""
    env = {**TEST_SETTINGS, "DENOISE_BATCH_MAX_DELAY_MS": "400"}
    with running_server(env) as (url, _):
        triton = triton_http.InferenceServerClient(url.removeprefix("http://"))
        tensor = triton_http.InferInput("image", [1, 28, 28, 1], "FP32")
        tensor.set_data_from_numpy(images_array()[:1])
        answers: dict[str, Any] = {}
        threads = [
            threading.Thread(target=lambda: answers.update(v2=triton.infer(f"{MODEL}-autoencoder", [tensor]))),
            threading.Thread(
                target=lambda: answers.update(
                    rest=own_api(url, "/denoise", content=IMAGES[1], headers={"content-type": "image/png"})
                )
            ),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert set(answers) == {"v2", "rest"}
        metrics = httpx.get(f"{url}/metrics").text
    line = f'denoise_inference_batch_size_count{{graph="autoencoder",model="{MODEL}"}}'
    counts = [float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line)]
    sums = [float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line.replace("_count", "_sum"))]
    assert (counts, sums) == ([1.0], [2.0])  # one ONNX Runtime call of two images
    assert 'protocol="v2"' in metrics
    assert 'protocol="rest"' in metrics


# --- malformed requests: each gets its 4xx with {"error": "..."} and the service stays healthy ---

INFER = f"/v2/models/{MODEL}-autoencoder/infer"
ONE_IMAGE = np.zeros((1, 28, 28, 1), dtype=np.float32)


def infer_json(data: Any = None, **overrides: Any) -> dict[str, Any]:
    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": data or [0.0] * 784}
    tensor.update(overrides)
    return {"inputs": [tensor]}


def binary_request(header: dict[str, Any], blob: bytes, length: str | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + blob, {"Inference-Header-Content-Length": length if length is not None else str(len(head))}


def bad_requests() -> list[tuple[str, str, Callable[[], tuple[bytes, dict[str, str]]], int, str]]:
    blob = ONE_IMAGE.tobytes()
    binary_header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": [1, 28, 28, 1],
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    nan = np.full((1, 7, 7, 8), np.nan, dtype=np.float32).tobytes()
    decoder = {
        "inputs": [
            {"name": "latent", "datatype": "FP32", "shape": [1, 7, 7, 8], "parameters": {"binary_data_size": len(nan)}}
        ]
    }
    deep = b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": ' + b"[" * 100_000
    return [
        ("shape against data", INFER, lambda: (json.dumps(infer_json([0.0] * 10)).encode(), {}), 400, "784 elements"),
        ("datatype", INFER, lambda: (json.dumps(infer_json(datatype="FP64")).encode(), {}), 400, "takes FP32"),
        (
            "unknown input",
            INFER,
            lambda: (json.dumps(infer_json(name="pixels")).encode(), {}),
            400,
            "no input 'pixels'",
        ),
        (
            "unknown output",
            INFER,
            lambda: (json.dumps({**infer_json(), "outputs": [{"name": "x"}]}).encode(), {}),
            400,
            "no output 'x'",
        ),
        ("missing inputs", INFER, lambda: (b'{"inputs": []}', {}), 400, "no 'inputs'"),
        # Found by the schema fuzz (schemathesis): each once a 500.
        (
            "datatype not a string",
            INFER,
            lambda: (json.dumps(infer_json(datatype={"a": 1})).encode(), {}),
            400,
            "not a V2 datatype",
        ),
        ("outputs not a list", INFER, lambda: (json.dumps({**infer_json(), "outputs": 5}).encode(), {}), 400, "list"),
        ("binary size past body", INFER, lambda: binary_request(binary_header, blob[:-4]), 400, "runs past"),
        ("binary bytes left over", INFER, lambda: binary_request(binary_header, blob + b"xx"), 400, "add up to"),
        ("header length negative", INFER, lambda: binary_request(binary_header, blob, "-5"), 400, "not a non-negative"),
        (
            "header length not a number",
            INFER,
            lambda: binary_request(binary_header, blob, "ten"),
            400,
            "not a non-negative",
        ),
        ("header length beyond body", INFER, lambda: binary_request(binary_header, blob, "999999"), 400, "exceeds"),
        (
            "non-finite into decoder",
            f"/v2/models/{MODEL}-decoder/infer",
            lambda: binary_request(decoder, nan),
            400,
            "NaN or infinite",
        ),
        (
            "batch beyond limit",
            INFER,
            lambda: (json.dumps(infer_json([0.0] * 784 * 40, shape=[40, 28, 28, 1])).encode(), {}),
            413,
            "exceeds the limit",
        ),
        ("malformed JSON", INFER, lambda: (b'{"inputs": [', {}), 400, "not valid JSON"),
        ("deep nesting", INFER, lambda: (deep + b"0" + b"]" * 100_000 + b"}]}", {}), 400, "depth limit exceeded"),
        (
            "nesting deeper than the shape",
            INFER,
            lambda: (json.dumps(infer_json([[[[[[[[[[0.0]]]]]]]]]])).encode(), {}),
            400,
            "deeper than",
        ),
        (
            "unknown model",
            "/v2/models/nope/infer",
            lambda: (json.dumps(infer_json()).encode(), {}),
            404,
            "unknown model",
        ),
        (
            "undecodable png",
            f"/v2/models/{MODEL}/infer",
            lambda: (
                json.dumps(
                    {"inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "data": ["bm90IGEgcG5n"]}]}
                ).encode(),
                {},
            ),
            400,
            "not a PNG",
        ),
        (
            "gzip bomb",
            INFER,
            lambda: (gzip.compress(b" " * (8 * 1024 * 1024)), {"Content-Encoding": "gzip"}),
            413,
            "inflated body exceeds",
        ),
    ]


@pytest.mark.parametrize(
    ("what", "path", "build", "status", "message"),
    bad_requests(),
    ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else "",
)
def test_bad_request_gets_its_status_and_a_message(
    client: TestClient,
    what: str,
    path: str,
    build: Callable[[], tuple[bytes, dict[str, str]]],
    status: int,
    message: str,
) -> None:
    body, headers = build()
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert list(error) == ["error"]
    assert isinstance(error["error"], str)
    assert message.lower() in error["error"].lower(), error["error"]
    assert client.get("/v2/health/ready").status_code == 200


def test_errors_from_the_front_door_take_v2_shape(make_client: Callable[..., TestClient]) -> None:
    """Checks made before a route runs (API key, body size) answer in V2's shape under /v2."""
    client = make_client(api_keys="k1", max_body_bytes=4096)
    assert client.get("/v2/health/ready").status_code == 200  # probes need no key
    unauthorized = client.post(INFER, content=b"{}")
    assert unauthorized.status_code == 401
    assert list(unauthorized.json()) == ["error"]
    too_large = client.post(INFER, content=b"x" * 8192, headers={"authorization": "Bearer k1"})
    assert too_large.status_code == 413
    assert "exceeds 4096 bytes" in too_large.json()["error"]
    binary = ONE_IMAGE.tobytes()
    body, headers = binary_request(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [1, 28, 28, 1],
                    "parameters": {"binary_data_size": len(binary)},
                }
            ]
        },
        binary,
    )
    answer = client.post(INFER, content=body, headers={**headers, "authorization": "Bearer k1"})
    assert answer.status_code == 200, answer.text


def test_bytes_binary_element_length_past_the_data(client: TestClient) -> None:
    blob = struct.pack("<I", 1000) + b"short"
    body, headers = binary_request(
        {"inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(blob)}}]},
        blob,
    )
    response = client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "runs past" in response.json()["error"]
