"""The Open Inference Protocol's gRPC messages (``inference.GRPCInferenceService``, as ``tritonclient``
ships its stubs) to and from the service's own request and tensor types: nothing else."""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2

from app.v2.tensors import (
    InferRequest,
    RequestedOutput,
    Tensor,
    V2Error,
    check_shape,
    from_binary,
    from_values,
    to_binary,
)

#: The typed ``contents`` field of each datatype (FP16 travels only as raw bytes).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters(parameters: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, kind) if kind else None
    return values


def _tensor(request: service_pb2.ModelInferRequest, index: int) -> Tensor:
    spec = request.inputs[index]
    name, datatype = spec.name, spec.datatype
    if datatype not in CONTENTS and datatype != "FP16":
        raise V2Error(f"input {name!r}: datatype {datatype!r} is not a V2 datatype")
    shape = check_shape(name, list(spec.shape))
    if request.raw_input_contents:
        if spec.contents.ListFields():
            raise V2Error(
                f"input {name!r}: data given both in raw_input_contents and in contents; send it in one of them"
            )
        return Tensor(name, datatype, shape, from_binary(name, datatype, shape, request.raw_input_contents[index]))
    if datatype not in CONTENTS:
        raise V2Error(f"input {name!r}: {datatype} must be sent in raw_input_contents")
    return Tensor(name, datatype, shape, from_values(name, datatype, shape, getattr(spec.contents, CONTENTS[datatype])))


def infer_request(request: service_pb2.ModelInferRequest) -> InferRequest:
    if not request.inputs:
        raise V2Error("request has no inputs")
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise V2Error(
            f"raw_input_contents has {len(request.raw_input_contents)} entries for {len(request.inputs)} inputs"
        )
    return InferRequest(
        id=request.id or None,
        inputs=[_tensor(request, i) for i in range(len(request.inputs))],
        outputs=[RequestedOutput(output.name, True) for output in request.outputs],
        parameters=parameters(request.parameters),
    )


def infer_response(model: str, version: str, request_id: str, outputs: list[tuple[Tensor, bool]]) -> Any:
    """A ``ModelInferResponse``: every output as raw bytes (gRPC has no JSON form to choose)."""
    response = service_pb2.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    for tensor, _ in outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        response.raw_output_contents.append(to_binary(tensor))
    return response
