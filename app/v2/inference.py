"""A V2 inference request run through the service's own machinery: the same image decoding and
normalisation, limits and per-graph batchers as ``/denoise``, ``/encode`` and ``/reconstruct``.

Request ``parameters`` ``resize``, ``invert`` and ``reinvert`` (booleans) do for the PNG model what
the query options do for ``/denoise``.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from app.config import Settings
from app.errors import clip
from app.pipeline import decode_options, infer_images, output_pngs
from app.runtime.batcher import ALWAYS, Until
from app.v2.catalog import PNG_OUTPUT, SCORE_OUTPUT, V2Model
from app.v2.tensors import InferRequest, Tensor, V2Error

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The largest ``timeout`` parameter: Triton's is an unsigned 64-bit count of microseconds.
MAX_TIMEOUT_US = 2**64 - 1


def _flag(request: InferRequest, name: str) -> bool:
    value = request.parameters.get(name, False)
    if not isinstance(value, bool):
        raise V2Error(f"parameter {name!r} must be a boolean")
    return value


def _png_bytes(element: bytes) -> bytes:
    """Raw PNG bytes, or base64 text of them (how JSON carries bytes)."""
    if element.startswith(PNG_SIGNATURE):
        return element
    try:
        return base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError):
        return element  # not base64 either: decoding will say what it is


def _check_input(model: V2Model, request: InferRequest, settings: Settings) -> Tensor:
    expected = model.inputs[0]
    names = [tensor.name for tensor in request.inputs]
    unknown = [name for name in names if name != expected.name]
    if unknown:
        raise V2Error(f"model {model.name!r} has no input {unknown[0]!r}; its input is {expected.name!r}")
    if len(names) != 1:
        raise V2Error(f"model {model.name!r} takes one input {expected.name!r}, given {len(names)}")
    tensor = request.inputs[0]
    if tensor.datatype != expected.datatype:
        raise V2Error(f"input {tensor.name!r} is {tensor.datatype}; model {model.name!r} takes {expected.datatype}")
    if len(tensor.shape) != len(expected.shape) or any(
        want != -1 and got != want for got, want in zip(tensor.shape, expected.shape, strict=True)
    ):
        raise V2Error(f"input {tensor.name!r} has shape {list(tensor.shape)}; model takes {list(expected.shape)}")
    batch = tensor.shape[0]
    if batch == 0:
        raise V2Error(f"input {tensor.name!r} holds no images (batch dimension 0)")
    if batch > settings.max_batch_images:
        raise V2Error(
            f"batch of {batch} exceeds the limit of {settings.max_batch_images} per request "
            "(DENOISE_MAX_BATCH_IMAGES); split it",
            413,
        )
    if tensor.datatype == "FP32" and not np.isfinite(tensor.data).all():
        raise V2Error(f"input {tensor.name!r} holds NaN or infinite values")
    return tensor


def requested(model: V2Model, request: InferRequest) -> list[tuple[str, bool]]:
    """Output names with their form (binary or JSON): those asked for, or all in the default form."""
    if not request.outputs:
        return [(meta.name, request.binary_default) for meta in model.outputs]
    chosen = []
    for output in request.outputs:
        if model.output(output.name) is None:
            names = ", ".join(repr(meta.name) for meta in model.outputs)
            raise V2Error(f"model {model.name!r} has no output {output.name!r}; its outputs are {names}")
        chosen.append((output.name, request.binary_default if output.binary is None else output.binary))
    return chosen


def deadline(request: InferRequest, received: float, front_door: float | None) -> float | None:
    """The request's deadline (``time.monotonic()``): the earlier of the front door's (a gRPC deadline, an
    HTTP header) and the ``timeout`` parameter, microseconds from ``received`` as Triton reads it (0: none)."""
    timeout = request.parameters.get("timeout")
    if timeout is None:
        return front_door
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= MAX_TIMEOUT_US:
        raise V2Error(
            f"parameter 'timeout' must be whole microseconds (an integer from 0 to {MAX_TIMEOUT_US}), "
            f"got {clip(repr(timeout))}"
        )
    if timeout == 0:
        return front_door
    own = received + timeout / 1e6
    return own if front_door is None else min(own, front_door)


async def run(
    model: V2Model, request: InferRequest, settings: Settings, until: Until = ALWAYS
) -> list[tuple[Tensor, bool]]:
    """Validate, run through the model's batcher while the work is wanted (``until``), and return the
    requested outputs with their form."""
    tensor = _check_input(model, request, settings)
    wanted = requested(model, request)
    reinvert = _flag(request, "reinvert")
    if model.kind == "png":
        options = decode_options(settings, resize=_flag(request, "resize"), invert=_flag(request, "invert"))
        uploads = [_png_bytes(bytes(item)) for item in tensor.data]
        result = await infer_images(model.bundle, model.graph, uploads, options, until)
    else:
        inputs = np.ascontiguousarray(tensor.data, dtype=np.float32)
        result = await model.bundle.infer(model.graph, inputs, until)
    count = len(tensor.data)
    produced: dict[str, Tensor] = {}
    main = model.outputs[0]
    if model.kind == "png":
        pngs = np.array(await output_pngs(result.outputs, reinvert), dtype=np.object_)
        produced[PNG_OUTPUT] = Tensor(PNG_OUTPUT, "BYTES", (count,), pngs)
    else:
        produced[main.name] = Tensor(main.name, "FP32", (count, *main.shape[1:]), result.outputs)
    if result.scores is not None:
        produced[SCORE_OUTPUT] = Tensor(SCORE_OUTPUT, "FP32", (count, 1), result.scores.reshape(count, 1))
    return [(produced[name], binary) for name, binary in wanted]
