"""The Open Inference Protocol over gRPC, driven by ``tritonclient.grpc`` against a real server: every
call, outputs equal to the HTTP API's, and bad requests answered with the right status codes."""

from __future__ import annotations

import base64
import signal
import threading
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import MODEL, decode_png, digit, png
from tests.images import assert_int8_close
from tests.server import TEST_SETTINGS, free_port, poll, running_server

IMAGES = [png(digit(seed)) for seed in (6, 7)]
ALL_MODELS = [MODEL, f"{MODEL}-autoencoder", f"{MODEL}-encoder", f"{MODEL}-decoder"]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, str]]:
    port = free_port()
    env = {**TEST_SETTINGS, "DENOISE_GRPC_PORT": str(port), "DENOISE_MAX_BODY_BYTES": str(256 * 1024)}
    with running_server(env) as (url, _):
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def triton(server: tuple[str, str]) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(server[1])
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server: tuple[str, str]) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server[1]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def images_array() -> np.ndarray:
    return np.stack([decode_png(image) for image in IMAGES]).astype(np.float32)[..., None] / 255


def test_health_metadata_config_and_index(triton: triton_grpc.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert "binary_tensor_data" in triton.get_server_metadata().extensions
    assert {m.name for m in triton.get_model_repository_index().models} == set(ALL_MODELS)
    for name in ALL_MODELS:
        assert triton.is_model_ready(name)
        metadata = triton.get_model_metadata(name)
        assert metadata.platform == "onnxruntime_onnx"
        assert metadata.inputs[0].shape[0] == -1
        config = triton.get_model_config(name).config
        assert config.name == name
        assert config.max_batch_size == int(TEST_SETTINGS["DENOISE_MAX_BATCH_IMAGES"])
    assert not triton.is_model_ready("no-such-model")


def test_unknown_model_is_not_found(triton: triton_grpc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as raised:
        triton.get_model_metadata("no-such-model")
    assert raised.value.status() == "StatusCode.NOT_FOUND"


def test_png_model_equals_denoise(triton: triton_grpc.InferenceServerClient, server: tuple[str, str]) -> None:
    tensor = triton_grpc.InferInput("png", [len(IMAGES)], "BYTES")
    tensor.set_data_from_numpy(np.array(IMAGES, dtype=np.object_))
    result = triton.infer(MODEL, [tensor], request_id="g-1")
    assert result.get_response().id == "g-1"
    files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(IMAGES)]
    body = httpx.post(f"{server[0]}/denoise", files=files).json()
    got = [decode_png(bytes(item)).tolist() for item in result.as_numpy("denoised_png")]
    assert got == [decode_png(base64.b64decode(item)).tolist() for item in body["images"]]
    assert np.allclose(result.as_numpy("anomaly_score")[:, 0], body["anomaly_scores"], atol=1e-4)


@pytest.mark.parametrize("raw", [True, False])
def test_graphs_equal_encode_with_raw_and_typed_contents(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, server: tuple[str, str], raw: bool
) -> None:
    """tritonclient always sends raw_input_contents; the typed ``contents`` are read as well."""
    batch = images_array()
    request = service_pb2.ModelInferRequest(model_name=f"{MODEL}-encoder")
    tensor = request.inputs.add(name="image", datatype="FP32", shape=list(batch.shape))
    if raw:
        request.raw_input_contents.append(batch.tobytes())
    else:
        tensor.contents.fp32_contents.extend(batch.ravel().tolist())
    request.outputs.add(name="latent")
    response = stub.ModelInfer(request)
    latents = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(list(response.outputs[0].shape))
    files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(IMAGES)]
    encoded = httpx.post(f"{server[0]}/encode", files=files).json()
    assert np.allclose(latents.reshape(len(IMAGES), -1), encoded["latents"], atol=1e-5)


def test_decoder_and_autoencoder(triton: triton_grpc.InferenceServerClient) -> None:
    image = triton_grpc.InferInput("image", [len(IMAGES), 28, 28, 1], "FP32")
    image.set_data_from_numpy(images_array())
    denoised = triton.infer(f"{MODEL}-autoencoder", [image]).as_numpy("denoised")
    latent = triton.infer(f"{MODEL}-encoder", [image]).as_numpy("latent")
    latent_in = triton_grpc.InferInput("latent", list(latent.shape), "FP32")
    latent_in.set_data_from_numpy(latent)
    rebuilt = triton.infer(f"{MODEL}-decoder", [latent_in]).as_numpy("denoised")
    # The autoencoder is the decoder of the encoder (exactly so in float32: tests/app/test_inference.py); on
    # CPU the served autoencoder is the bundle's int8 copy, within a few grey levels of the float32 one.
    assert_int8_close(denoised * 255, rebuilt * 255)


def _status(stub: service_pb2_grpc.GRPCInferenceServiceStub, request: service_pb2.ModelInferRequest) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request)
    error = raised.value
    assert error.details()  # every refusal says why
    code: grpc.StatusCode = error.code()
    return code


def _request(model: str = f"{MODEL}-autoencoder", **tensor: object) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    spec = {"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1], **tensor}
    request.inputs.add(**spec)
    return request


def bad_requests() -> list[tuple[str, service_pb2.ModelInferRequest, grpc.StatusCode]]:
    one = np.zeros((1, 28, 28, 1), dtype=np.float32).tobytes()
    cases = []
    short = _request()
    short.raw_input_contents.append(one[:-4])
    cases.append(("shape against data", short, grpc.StatusCode.INVALID_ARGUMENT))
    fp64 = _request(datatype="FP64")
    fp64.raw_input_contents.append(np.zeros(784).tobytes())
    cases.append(("datatype", fp64, grpc.StatusCode.INVALID_ARGUMENT))
    unknown = _request(name="pixels")
    unknown.raw_input_contents.append(one)
    cases.append(("unknown input", unknown, grpc.StatusCode.INVALID_ARGUMENT))
    output = _request()
    output.raw_input_contents.append(one)
    output.outputs.add(name="nope")
    cases.append(("unknown output", output, grpc.StatusCode.INVALID_ARGUMENT))
    cases.append(
        (
            "missing inputs",
            service_pb2.ModelInferRequest(model_name=f"{MODEL}-autoencoder"),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    )
    extra = _request()
    extra.raw_input_contents.extend([one, one])
    cases.append(("raw contents against inputs", extra, grpc.StatusCode.INVALID_ARGUMENT))
    nan = _request(model=f"{MODEL}-decoder", name="latent", shape=[1, 7, 7, 8])
    nan.raw_input_contents.append(np.full(392, np.nan, dtype=np.float32).tobytes())
    cases.append(("non-finite into decoder", nan, grpc.StatusCode.INVALID_ARGUMENT))
    big = _request(shape=[40, 28, 28, 1])
    big.raw_input_contents.append(np.zeros((40, 28, 28, 1), dtype=np.float32).tobytes())
    cases.append(("batch beyond limit", big, grpc.StatusCode.RESOURCE_EXHAUSTED))
    negative = _request(shape=[-1, 28, 28, 1])
    negative.raw_input_contents.append(one)
    cases.append(("negative shape", negative, grpc.StatusCode.INVALID_ARGUMENT))
    missing = _request(model="no-such-model")
    missing.raw_input_contents.append(one)
    cases.append(("unknown model", missing, grpc.StatusCode.NOT_FOUND))
    png_model = _request(model=MODEL, name="png", datatype="BYTES", shape=[1])
    png_model.inputs[0].contents.bytes_contents.append(b"not a png")
    cases.append(("undecodable png", png_model, grpc.StatusCode.INVALID_ARGUMENT))
    both = _request()
    both.raw_input_contents.append(one)
    both.inputs[0].contents.fp32_contents.extend([0.0] * 784)
    cases.append(("raw and typed contents", both, grpc.StatusCode.INVALID_ARGUMENT))
    huge = _request(shape=[100, 28, 28, 1])
    huge.raw_input_contents.append(np.zeros((100, 28, 28, 1), dtype=np.float32).tobytes())
    cases.append(("message beyond the size limit", huge, grpc.StatusCode.RESOURCE_EXHAUSTED))
    return cases


@pytest.mark.parametrize(("what", "request_", "code"), bad_requests(), ids=[c[0] for c in bad_requests()])
def test_bad_request_gets_its_status(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    what: str,
    request_: service_pb2.ModelInferRequest,
    code: grpc.StatusCode,
) -> None:
    assert _status(stub, request_) == code
    assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready


@pytest.mark.parametrize("message", [b"\xff\xff\xff", b"\x0a\x05ab"], ids=["garbage", "truncated"])
def test_undecodable_message_is_invalid_argument(server: tuple[str, str], message: bytes) -> None:
    with grpc.insecure_channel(server[1]) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda raw: raw,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as raised:
            call(message)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not parse" in raised.value.details()
        ready = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(service_pb2.ServerReadyRequest())
    assert ready.ready


def test_api_keys_cover_grpc() -> None:
    port = free_port()
    env = {**TEST_SETTINGS, "DENOISE_GRPC_PORT": str(port), "DENOISE_API_KEYS": "k1"}
    with running_server(env) as (url, _):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready()  # probes need no key
        with pytest.raises(InferenceServerException) as raised:
            client.get_model_metadata(MODEL)
        assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.get_model_metadata(MODEL, headers={"authorization": "Bearer k1"}).name == MODEL
        client.close()
        metrics = httpx.get(f"{url}/metrics", headers={"authorization": "Bearer k1"}).text
    assert 'protocol="grpc"' in metrics
    assert 'status="UNAUTHENTICATED"' in metrics


def _refused_while_busy(url: str) -> bool:
    response = httpx.get(f"{url}/v2/models/{MODEL}/ready")  # not limited: a probe of the slot follows
    assert response.status_code == 200
    busy = httpx.post(f"{url}/denoise", content=b"x", headers={"content-type": "image/png"})
    return busy.status_code == 503


def test_shutdown_finishes_grpc_calls_in_progress() -> None:
    """SIGTERM while a gRPC call waits in a batching window: the call still gets its answer."""
    port = free_port()
    # One slot in flight: while the gRPC call holds it, an HTTP request is refused, which says the call
    # has been admitted and waits in the batching window.
    env = {
        **TEST_SETTINGS,
        "DENOISE_GRPC_PORT": str(port),
        "DENOISE_BATCH_MAX_DELAY_MS": "1000",
        "DENOISE_MAX_INFLIGHT": "1",
    }
    with running_server(env) as (url, process):
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton_grpc.InferInput("png", [1], "BYTES")
        tensor.set_data_from_numpy(np.array(IMAGES[:1], dtype=np.object_))
        answers: list[object] = []
        call = threading.Thread(target=lambda: answers.append(client.infer(MODEL, [tensor], client_timeout=20)))
        call.start()
        poll(lambda: _refused_while_busy(url), 10, "the gRPC call in progress")
        process.send_signal(signal.SIGTERM)
        call.join(timeout=30)
        client.close()
        assert process.wait(timeout=30) == 0
    (result,) = answers
    assert decode_png(bytes(result.as_numpy("denoised_png")[0])).shape == (28, 28)  # type: ignore[attr-defined]
