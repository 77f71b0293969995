"""KServe's own V2 clients against a running service: ``python -m tests.app.kserve_calls URL GRPC_TARGET``
prints one JSON object of what each call returned or raised.

A process of its own: KServe's generated protobuf module and Triton's (which the service and tritonclient
use) both define the ``inference`` package, and one descriptor pool cannot hold both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Awaitable
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, InferResponse, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.images import digit, png

MODEL = "mnist"


def _images(count: int) -> np.ndarray:
    pixels = np.stack([np.asarray(digit(seed), dtype=np.float32) / 255 for seed in range(count)])
    return pixels[..., np.newaxis]


def _outputs(response: InferResponse) -> dict[str, Any]:
    """Each output's shape, and PNG outputs as their byte lengths and first bytes."""
    found: dict[str, Any] = {}
    for output in response.outputs:
        array = output.as_numpy()
        if output.datatype == "BYTES":
            # Binary tensor data gives bytes; JSON gives the base64 text the service sends for BYTES there.
            items = [item if isinstance(item, bytes) else base64.b64decode(item) for item in array]
            found[output.name] = {"shape": list(array.shape), "png": [item[:8].hex() for item in items]}
        else:
            found[output.name] = {"shape": list(array.shape), "finite": bool(np.isfinite(array).all())}
    return found


async def _outcome(call: Awaitable[Any]) -> Any:
    """What a call returned, or the error it raised (status or gRPC code, and the message)."""
    try:
        result = await call
    except httpx.HTTPStatusError as exc:
        return {"status": exc.response.status_code, "error": exc.response.json().get("error", "")}
    except grpc.RpcError as exc:
        return {"code": exc.code().name, "error": exc.details()}
    return _outputs(result) if isinstance(result, InferResponse) else result


def _tensor(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> InferInput:
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


async def rest_calls(url: str) -> dict[str, Any]:
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30)) as client:

        def infer(model: str, tensor: InferInput) -> Awaitable[Any]:
            call: Awaitable[Any] = client.infer(
                url, InferRequest(model_name=model, infer_inputs=[tensor]), model_name=model
            )
            return call

        pngs = np.array([png(digit(1)), png(digit(2))], dtype=np.object_)
        return {
            "live": await _outcome(client.is_server_live(url)),
            "ready": await _outcome(client.is_server_ready(url)),
            "model_ready": await _outcome(client.is_model_ready(url, MODEL)),
            "unknown_ready": await _outcome(client.is_model_ready(url, "no-such-model")),
            "json_tensors": await _outcome(infer(f"{MODEL}-encoder", _tensor("image", _images(3), "FP32", False))),
            "binary_tensors": await _outcome(infer(f"{MODEL}-encoder", _tensor("image", _images(3), "FP32"))),
            "png": await _outcome(infer(MODEL, _tensor("png", pngs, "BYTES"))),
            "unknown_model": await _outcome(infer("no-such-model", _tensor("image", _images(1), "FP32", False))),
            "wrong_input": await _outcome(infer(f"{MODEL}-decoder", _tensor("image", _images(1), "FP32", False))),
        }


async def grpc_calls(target: str) -> dict[str, Any]:
    client = InferenceGRPCClient(target, retries=0, timeout=30)
    try:

        def infer(model: str, tensor: InferInput) -> Awaitable[Any]:
            call: Awaitable[Any] = client.infer(InferRequest(model_name=model, infer_inputs=[tensor]))
            return call

        pngs = np.array([png(digit(5))], dtype=np.object_)
        return {
            "live": await _outcome(client.is_server_live()),
            "ready": await _outcome(client.is_server_ready()),
            "model_ready": await _outcome(client.is_model_ready(MODEL)),
            "unknown_ready": await _outcome(client.is_model_ready("no-such-model")),
            "binary_tensors": await _outcome(infer(f"{MODEL}-autoencoder", _tensor("image", _images(2), "FP32"))),
            "png": await _outcome(infer(MODEL, _tensor("png", pngs, "BYTES"))),
            "unknown_model": await _outcome(infer("no-such-model", _tensor("image", _images(1), "FP32"))),
        }
    finally:
        await client.close()


def metadata_calls(target: str) -> dict[str, Any]:
    """ModelMetadata through KServe's generated stub (its clients have no metadata call)."""
    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=f"{MODEL}-decoder"), timeout=10)
        try:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="c" * 15_000), timeout=10)
            long_name: dict[str, Any] = {"code": "OK"}
        except grpc.RpcError as exc:
            long_name = {"code": exc.code().name, "error": exc.details()}
    return {
        "inputs": [{"name": t.name, "shape": list(t.shape), "datatype": t.datatype} for t in metadata.inputs],
        "long_name": long_name,
    }


def main() -> None:
    url, target = sys.argv[1:3]
    results = {
        "rest": asyncio.run(rest_calls(url)),
        "grpc": asyncio.run(grpc_calls(target)),
        "metadata": metadata_calls(target),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
