"""V2 tensors: reading inference requests and writing responses, over REST's JSON and binary tensor data.

A REST body is a JSON header, optionally followed by binary tensor data (Triton's binary data
extension: ``Inference-Header-Content-Length`` says where the JSON ends; each binary input names its
``binary_data_size``, and the sections follow in input order). ``BYTES`` elements in binary form are
each a 4-byte little-endian length and the bytes; in JSON they are strings. The JSON is read and
written by :mod:`app.jsonbody` (numeric tensors written from their arrays).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app import jsonbody
from app.errors import ApiError, clip

#: V2 datatypes and their numpy types (``BYTES`` elements are ``bytes`` in an object array).
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
#: The most dimensions a request tensor may have, and how deep its JSON data may nest.
MAX_DIMS = 8


class V2Error(ApiError):
    """A V2 request refused for what the protocol's framing or tensors say: ``status`` is the HTTP
    status; each front door renders it (:mod:`app.errors`)."""

    code = "invalid_request"

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    #: Numeric: an array of ``shape``; ``BYTES``: a flat object array of ``bytes``.
    data: np.ndarray


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def binary_default(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


def element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def check_shape(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise V2Error(f"input {name!r}: shape must be a list of at most {MAX_DIMS} non-negative integers")
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in value):
        raise V2Error(f"input {name!r}: shape {value} must hold non-negative integers")
    return tuple(value)


def _flatten(name: str, data: Any, limit: int) -> list[Any]:
    """Flat or nested JSON lists to a flat list, refusing nesting deeper than ``MAX_DIMS``."""
    flat: list[Any] = []
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, list):
            if depth >= MAX_DIMS:
                raise V2Error(f"input {name!r}: data nests deeper than {MAX_DIMS} levels")
            stack.extend((item, depth + 1) for item in reversed(value))
        else:
            flat.append(value)
            if len(flat) > limit:
                break
    return flat


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    expected = element_count(shape)
    flat = _flatten(name, data, expected)
    if len(flat) != expected:
        raise V2Error(
            f"input {name!r}: shape {list(shape)} holds {expected} elements but data has "
            f"{'more' if len(flat) > expected else len(flat)}"
        )
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise V2Error(f"input {name!r}: BYTES data in JSON must be strings")
        return np.array([v.encode("utf-8") for v in flat], dtype=np.object_)
    if datatype == "BOOL":
        valid = all(isinstance(v, bool) for v in flat)
    else:
        valid = all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat)
    if not valid:
        raise V2Error(f"input {name!r}: data must be {'booleans' if datatype == 'BOOL' else 'numbers'}")
    try:
        return np.array(flat, dtype=DTYPES[datatype]).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise V2Error(f"input {name!r}: data does not fit {datatype}: {exc}") from exc


def _bytes_elements(name: str, raw: bytes, expected: int) -> np.ndarray:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise V2Error(f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise V2Error(f"input {name!r}: BYTES element of {length} bytes runs past the binary data")
        elements.append(raw[offset : offset + length])
        offset += length
    if len(elements) != expected:
        raise V2Error(f"input {name!r}: shape holds {expected} elements but the binary data has {len(elements)}")
    return np.array(elements, dtype=np.object_)


def from_binary(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    expected = element_count(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, raw, expected)
    itemsize = np.dtype(DTYPES[datatype]).itemsize
    if len(raw) != expected * itemsize:
        raise V2Error(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {expected * itemsize} bytes, "
            f"binary_data_size is {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<")).reshape(shape)


def from_values(name: str, datatype: str, shape: tuple[int, ...], values: Any) -> np.ndarray:
    """A tensor from typed values (gRPC's ``contents``), checked against the shape."""
    expected = element_count(shape)
    if len(values) != expected:
        raise V2Error(f"input {name!r}: shape {list(shape)} holds {expected} elements but contents has {len(values)}")
    if datatype == "BYTES":
        return np.array([bytes(v) for v in values], dtype=np.object_)
    try:
        return np.array(values, dtype=DTYPES[datatype]).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise V2Error(f"input {name!r}: contents do not fit {datatype}: {exc}") from exc


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise V2Error(f"{what} must be a JSON object")
    return value


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it, by ``Inference-Header-Content-Length``."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit():
        raise V2Error(f"Inference-Header-Content-Length {header_length[:20]!r} is not a non-negative integer")
    length = int(header_length)
    if length > len(body):
        raise V2Error(f"Inference-Header-Content-Length {length} exceeds the body's {len(body)} bytes")
    return body[:length], body[length:]


def parse_json(header: bytes) -> dict[str, Any]:
    try:
        value = jsonbody.loads(header)
    except jsonbody.JSONDecodeError as exc:
        raise V2Error(f"request body is not valid JSON: {exc}") from None
    return _object(value, "the request")


def parse_infer_request(payload: dict[str, Any], binary: bytes) -> InferRequest:
    """Read ``inputs`` (JSON ``data`` or binary sections), ``outputs``, ``id`` and ``parameters``."""
    inputs_json = payload.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise V2Error("request has no 'inputs' list")
    offset = 0
    inputs: list[Tensor] = []
    for item in inputs_json:
        spec = _object(item, "each input")
        name = spec.get("name")
        datatype = spec.get("datatype")
        if not isinstance(name, str):
            raise V2Error("each input needs a 'name' string")
        name = clip(name)
        if not isinstance(datatype, str) or datatype not in DTYPES:
            raise V2Error(f"input {name!r}: datatype {clip(repr(datatype))} is not a V2 datatype ({', '.join(DTYPES)})")
        shape = check_shape(name, spec.get("shape"))
        parameters = _object(spec.get("parameters", {}), f"input {name!r}: parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise V2Error(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise V2Error(
                    f"input {name!r}: binary_data_size {size} runs past the {len(binary)} bytes of binary data"
                )
            data = from_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in spec:
            data = _from_json(name, datatype, shape, spec["data"])
        else:
            raise V2Error(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        inputs.append(Tensor(name, datatype, shape, data))
    if offset != len(binary):
        raise V2Error(f"binary data is {len(binary)} bytes but the inputs' binary_data_size add up to {offset}")
    outputs = []
    requested = payload.get("outputs") or []
    if not isinstance(requested, list):
        raise V2Error("'outputs' must be a list of {\"name\": ...} objects")
    for item in requested:
        spec = _object(item, "each requested output")
        name = spec.get("name")
        if not isinstance(name, str):
            raise V2Error("each requested output needs a 'name' string")
        binary_flag = _object(spec.get("parameters", {}), f"output {name!r}: parameters").get("binary_data")
        outputs.append(RequestedOutput(name, bool(binary_flag) if binary_flag is not None else None))
    request_id = payload.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=inputs,
        outputs=outputs,
        parameters=_object(payload.get("parameters", {}), "parameters"),
    )


def to_json_data(tensor: Tensor) -> list[Any] | np.ndarray:
    """A tensor's elements, flattened, as :func:`app.jsonbody.dumps` writes them: base64 strings for
    ``BYTES``, else the array itself."""
    if tensor.datatype == "BYTES":
        import base64

        return [base64.b64encode(value).decode("ascii") for value in tensor.data]
    return tensor.data.ravel()  # contiguous, as orjson writes arrays (a copy only where the data is not)


def to_binary(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(value)) + value for value in tensor.data)
    return np.ascontiguousarray(tensor.data, dtype=np.dtype(DTYPES[tensor.datatype]).newbyteorder("<")).tobytes()


def response_body(
    model: str, version: str, request: InferRequest, outputs: list[tuple[Tensor, bool]]
) -> tuple[bytes, int | None]:
    """The REST response: JSON, then the binary outputs; and the JSON's length when binary follows."""
    described: list[dict[str, Any]] = []
    sections: list[bytes] = []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary:
            raw = to_binary(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            sections.append(raw)
        else:
            entry["data"] = to_json_data(tensor)
        described.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id is not None:
        head["id"] = request.id
    head["outputs"] = described
    header = jsonbody.dumps(head)
    if not sections:
        return header, None
    return header + b"".join(sections), len(header)
