"""Rewrites of the float32 autoencoder graph that leave its output unchanged and make it quantise better.

- :func:`fold_transposed_batchnorm`: tf2onnx leaves a batch normalisation after a ``ConvTranspose`` as a
  ``Mul`` and an ``Add``; folded into the transposed convolution's weights and bias they stop being two
  more tensors rounded to 8 bits.
- :func:`equalize_activations`: a convolution followed by a ReLU (or by nothing) and then by another
  convolution computes the same thing when its output channel ``c`` is multiplied by ``s_c > 0`` and the
  next convolution's input channel ``c`` divided by ``s_c`` (ReLU is positively homogeneous). Activations
  are quantised per tensor, so channels whose peak is far below the tensor's peak get few of its 256
  levels; scaling each channel by ``(tensor peak / channel peak) ** strength`` narrows that gap while the
  next layer's per-channel weight scales absorb the rest (``strength`` 1 equalises the peaks outright).
- :func:`bottleneck_nodes`: the nodes that read or write the bottleneck and its input, which an int8
  graph keeps float32: the latent is the narrowest tensor of the network, every error in it reaches
  every output pixel.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, shape_inference

CONVOLUTIONS = ("Conv", "ConvTranspose")


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _per_channel(constants: dict[str, onnx.TensorProto], node: onnx.NodeProto, channels: int) -> np.ndarray | None:
    """The one constant input of a ``Mul`` or ``Add``, if it has one and it holds one value per channel
    of an NCHW tensor (shape ``(C, 1, 1)`` or ``(1, C, 1, 1)``)."""
    found = [numpy_helper.to_array(constants[name]) for name in node.input if name in constants]
    if len(found) != 1 or found[0].size != channels or found[0].ndim < 3 or found[0].shape[-3] != channels:
        return None
    return found[0].reshape(-1)


def _group(node: onnx.NodeProto) -> int:
    return next((attr.i for attr in node.attribute if attr.name == "group"), 1)


def _only_reader(
    readers: dict[str, list[onnx.NodeProto]], tensor: str, op_types: tuple[str, ...]
) -> onnx.NodeProto | None:
    found = readers.get(tensor, [])
    return found[0] if len(found) == 1 and found[0].op_type in op_types else None


def fold_transposed_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every bias-less ``ConvTranspose -> Mul(c) -> Add(c)`` folded into one
    ``ConvTranspose`` with bias (per output channel constants only)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    readers = _consumers(graph)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    folded: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "ConvTranspose" or len(node.input) != 2 or node.input[1] not in constants:
            continue
        weight = numpy_helper.to_array(constants[node.input[1]])
        mul = _only_reader(readers, node.output[0], ("Mul",))
        add = _only_reader(readers, mul.output[0], ("Add",)) if mul else None
        if mul is None or add is None or _group(node) != 1:
            continue
        scale, shift = (_per_channel(constants, op, weight.shape[1]) for op in (mul, add))
        if scale is None or shift is None:
            continue
        constants[node.input[1]].CopyFrom(
            numpy_helper.from_array(_scale_channels(weight, node.op_type, scale, outputs=True), node.input[1])
        )
        bias_name = f"{node.name}/folded_bias"
        graph.initializer.append(numpy_helper.from_array(shift.astype(np.float32), bias_name))
        node.input.append(bias_name)
        node.output[0] = add.output[0]
        folded += [mul, add]
    for node in folded:
        graph.node.remove(node)
    return model


def _scale_channels(weight: np.ndarray, op_type: str, scale: np.ndarray, *, outputs: bool) -> np.ndarray:
    """``weight`` with its output (or input) channel ``c`` multiplied by ``scale[c]``. Conv weights are
    (out, in, kh, kw); ConvTranspose weights are (in, out, kh, kw)."""
    axis = 0 if outputs == (op_type == "Conv") else 1
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    scaled: np.ndarray = (weight * scale.reshape(shape)).astype(np.float32)
    return scaled


def equalize_activations(
    model: onnx.ModelProto, input_name: str, calibration: np.ndarray, strength: float = 0.5
) -> onnx.ModelProto:
    """A copy of ``model`` whose convolution outputs feeding another convolution (through a ReLU or
    directly) are rescaled per channel, by ``(tensor peak / channel peak) ** strength`` over
    ``calibration``, the next convolution's weights compensating."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    readers = _consumers(graph)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    pairs: list[tuple[onnx.NodeProto, str, onnx.NodeProto]] = []
    for node in graph.node:
        if node.op_type not in CONVOLUTIONS or len(node.input) != 3 or _group(node) != 1:
            continue
        relu = _only_reader(readers, node.output[0], ("Relu",))
        activation = relu.output[0] if relu else node.output[0]
        following = _only_reader(readers, activation, CONVOLUTIONS)
        weights = {node.input[1], node.input[2], following.input[1]} if following else set()
        if following and _group(following) == 1 and weights <= set(constants):
            pairs.append((node, activation, following))
    if not pairs:
        return model
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    probe.graph.output.extend(helper.make_tensor_value_info(a, onnx.TensorProto.FLOAT, None) for _, a, _ in pairs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    activations = session.run([a for _, a, _ in pairs], {input_name: calibration})
    for (node, _, following), values in zip(pairs, activations, strict=True):
        peaks = np.abs(values).max(axis=(0, 2, 3))
        live = peaks > peaks.max() * 1e-6
        scale = np.ones_like(peaks)
        scale[live] = (peaks.max() / peaks[live]) ** strength
        updates = {
            node.input[1]: _scale_channels(
                numpy_helper.to_array(constants[node.input[1]]), node.op_type, scale, outputs=True
            ),
            node.input[2]: numpy_helper.to_array(constants[node.input[2]]) * scale,
            following.input[1]: _scale_channels(
                numpy_helper.to_array(constants[following.input[1]]), following.op_type, 1 / scale, outputs=False
            ),
        }
        for name, array in updates.items():
            constants[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))
    return model


def bottleneck_nodes(model: onnx.ModelProto) -> list[str]:
    """The convolution writing the narrowest convolution output (the latent), the convolution reading it,
    and the convolution (with the activations between) writing the latent's input."""
    inferred = shape_inference.infer_shapes(model)
    sizes: dict[str, int] = {}
    for info in inferred.graph.value_info:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim][1:]
        if dims and all(dims):
            sizes[info.name] = int(np.prod(dims))
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    readers = _consumers(graph)
    convolutions = [node for node in graph.node if node.op_type in CONVOLUTIONS and node.output[0] in sizes]
    latent = min(convolutions, key=lambda node: sizes[node.output[0]])
    nodes = [latent.name] + [reader.name for reader in readers.get(latent.output[0], [])]
    upstream = producer.get(latent.input[0])
    while upstream is not None:
        nodes.append(upstream.name)
        if upstream.op_type in CONVOLUTIONS:
            break
        upstream = producer.get(upstream.input[0])
    return nodes
