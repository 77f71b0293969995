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
- :func:`subpixel_transposed_convolutions`: a transposed convolution of stride ``s`` is ``s * s``
  ordinary convolutions, one per output phase, each reading a small window of the input; stacked as the
  output channels of one ``Conv`` and interleaved by ``DepthToSpace`` they give the same output. ONNX
  Runtime's CPU provider has an int8 kernel for ``Conv`` and none for ``ConvTranspose``, whose float32
  kernel (a GEMM and a col2im) costs the int8 graph about a third of its time.
- :func:`eight_bit_interleaves` (after quantisation): each interleave on the 8-bit values, written in the
  channels-last layout ONNX Runtime runs its int8 convolutions in.
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


def _attribute(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    found = next((attr for attr in node.attribute if attr.name == name), None)
    return list(found.ints) if found is not None else default


def _subpixel_weight(weight: np.ndarray, stride: int, taps: int) -> np.ndarray:
    """The ``Conv`` weight (phases * out, in, taps, taps) computing each output phase of a transposed
    convolution with ``weight`` (in, out, k, k) and ``stride``; phase ``(ry, rx)`` is output channel block
    ``ry * stride + rx`` (``DepthToSpace``'s DCR order). Tap ``p`` of the window reads input ``q + p -
    taps + 1`` and so meets kernel row ``r + stride * (taps - 1 - p)`` of phase ``r``."""
    inputs, outputs, size, _ = weight.shape
    conv = np.zeros((stride, stride, outputs, inputs, taps, taps), np.float32)
    for ry in range(stride):
        for rx in range(stride):
            for py in range(taps):
                for px in range(taps):
                    ky, kx = ry + stride * (taps - 1 - py), rx + stride * (taps - 1 - px)
                    if ky < size and kx < size:
                        conv[ry, rx, :, :, py, px] = weight[:, :, ky, kx].T
    return conv.reshape(stride * stride * outputs, inputs, taps, taps)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Each inferred tensor's shape (and the inputs'), 0 where a dimension is not known."""
    inferred = shape_inference.infer_shapes(model)
    return {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in [*inferred.graph.value_info, *inferred.graph.input]
    }


def _plain_transposed(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], shape: list[int]) -> bool:
    """A 2-D ``ConvTranspose`` with constant weights, equal strides, a square kernel, no groups,
    dilations, ``auto_pad`` or ``output_shape``, and an input of known size."""
    strides = _attribute(node, "strides", [1, 1])
    kernel = _attribute(node, "kernel_shape", [])
    names = {attr.name: attr for attr in node.attribute}
    return (
        node.op_type == "ConvTranspose"
        and all(name in constants for name in node.input[1:])
        and len(strides) == 2
        and strides[0] == strides[1]
        and kernel == [kernel[0]] * 2
        and _group(node) == 1
        and _attribute(node, "dilations", [1, 1]) == [1, 1]
        and names.get("auto_pad", helper.make_attribute("auto_pad", b"NOTSET")).s == b"NOTSET"
        and "output_shape" not in names
        and len(shape) == 4
        and all(shape[2:])
    )


def _subpixel_nodes(
    node: onnx.NodeProto,
    graph: onnx.GraphProto,
    constants: dict[str, onnx.TensorProto],
    size_in: tuple[int, int],
    relu: onnx.NodeProto | None,
) -> list[onnx.NodeProto]:
    """The nodes replacing the transposed convolution ``node`` (and the ``relu`` reading it, which then runs
    before the interleave, where it is fused into the convolution); their constants go into ``graph``."""
    stride, size = _attribute(node, "strides", [1, 1])[0], _attribute(node, "kernel_shape", [])[0]
    top, left, bottom, right = _attribute(node, "pads", [0, 0, 0, 0])
    extra = _attribute(node, "output_padding", [0, 0])
    out = (
        stride * (size_in[0] - 1) + size - top - bottom + extra[0],
        stride * (size_in[1] - 1) + size - left - right + extra[1],
    )
    taps = -(-size // stride)
    # How far the convolution's output runs past the input, so that the interleave covers the pads' crop.
    ends = [
        max(0, -(-(start + length) // stride) - held)
        for start, length, held in zip((top, left), out, size_in, strict=True)
    ]
    name = node.name or node.output[0]
    weight = numpy_helper.to_array(constants[node.input[1]])
    conv_inputs = [node.input[0], f"{name}/subpixel_weight"]
    graph.initializer.append(numpy_helper.from_array(_subpixel_weight(weight, stride, taps), conv_inputs[1]))
    if len(node.input) > 2:
        conv_inputs.append(f"{name}/subpixel_bias")
        bias = np.tile(numpy_helper.to_array(constants[node.input[2]]), stride * stride)
        graph.initializer.append(numpy_helper.from_array(bias, conv_inputs[2]))
    result = relu.output[0] if relu else node.output[0]
    crop = (top, left) != (0, 0) or tuple(stride * (n + e) for n, e in zip(size_in, ends, strict=True)) != out
    phases = f"{name}/subpixel_phases"
    nodes = [
        helper.make_node(
            "Conv",
            conv_inputs,
            [phases],
            name=f"{name}/subpixel",
            kernel_shape=[taps, taps],
            pads=[taps - 1, taps - 1, *ends],
        )
    ]
    if relu:
        nodes.append(helper.make_node("Relu", [phases], [f"{phases}/relu"], name=relu.name))
        phases = f"{phases}/relu"
    spread = f"{name}/subpixel_spread" if crop else result
    nodes.append(
        helper.make_node("DepthToSpace", [phases], [spread], name=f"{name}/subpixel_interleave", blocksize=stride)
    )
    if crop:
        bounds = {"starts": [top, left], "ends": [top + out[0], left + out[1]], "axes": [2, 3]}
        for key, values in bounds.items():
            graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), f"{name}/crop_{key}"))
        crop_inputs = [spread, *(f"{name}/crop_{key}" for key in bounds)]
        nodes.append(helper.make_node("Slice", crop_inputs, [result], name=f"{name}/subpixel_crop"))
    return nodes


def subpixel_transposed_convolutions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every plain transposed convolution (:func:`_plain_transposed`) replaced by
    ``Conv`` (-> ``Relu`` where one read it) -> ``DepthToSpace`` (-> ``Slice`` where the transposed
    convolution's pads crop its full output)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    shapes = _shapes(model)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    readers = _consumers(graph)
    nodes: list[onnx.NodeProto] = []
    absorbed: set[int] = set()
    for node in graph.node:
        shape = shapes.get(node.input[0], []) if node.input else []
        if id(node) in absorbed:
            continue
        if not _plain_transposed(node, constants, shape):
            nodes.append(node)
            continue
        relu = _only_reader(readers, node.output[0], ("Relu",))
        if relu is not None:
            absorbed.add(id(relu))
        nodes += _subpixel_nodes(node, graph, constants, (shape[2], shape[3]), relu)
    del graph.node[:]
    graph.node.extend(nodes)
    read = {name for node in graph.node for name in node.input}
    unread = [tensor for tensor in graph.initializer if tensor.name not in read]
    for tensor in unread:
        graph.initializer.remove(tensor)
    return model


def _same_quantisation(constants: dict[str, np.ndarray], dequantize: onnx.NodeProto, quantize: onnx.NodeProto) -> bool:
    """Whether both nodes have a constant scale and zero point, and the same ones (values and types)."""
    if len(dequantize.input) != 3 or len(quantize.input) != 3:
        return False
    names = zip(dequantize.input[1:], quantize.input[1:], strict=True)
    pairs = [(constants.get(a), constants.get(b)) for a, b in names]
    return all(a is not None and b is not None and a.dtype == b.dtype and np.array_equal(a, b) for a, b in pairs)


def eight_bit_interleaves(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a quantised ``model`` where each ``DequantizeLinear -> DepthToSpace -> QuantizeLinear``
    with the same scale and zero point on both sides moves the 8-bit values themselves (the same result:
    ``DepthToSpace`` only moves values; ONNX Runtime's quantiser leaves it in float32), written as
    :func:`_channels_last_interleave` where its input's size is known and its order is DCR."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    readers = _consumers(graph)
    producer = {name: node for node in graph.node for name in node.output}
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    shapes = _shapes(model)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for node in graph.node:
        dequantize = producer.get(node.input[0]) if node.op_type == "DepthToSpace" else None
        quantize = _only_reader(readers, node.output[0], ("QuantizeLinear",))
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or quantize is None:
            continue
        if len(readers.get(dequantize.output[0], [])) != 1 or not _same_quantisation(constants, dequantize, quantize):
            continue
        dropped |= {id(dequantize), id(quantize)}
        shape = shapes.get(node.input[0], [])
        dcr = next((attr.s for attr in node.attribute if attr.name == "mode"), b"DCR") == b"DCR"
        if len(shape) == 4 and all(shape[1:]) and dcr:
            blocksize = next(attr.i for attr in node.attribute if attr.name == "blocksize")
            replaced[id(node)] = _channels_last_interleave(
                graph, node.name or node.output[0], dequantize.input[0], quantize.output[0], shape[1:], blocksize
            )
        else:  # the node itself, on the 8-bit values
            node.input[0] = dequantize.input[0]
            node.output[0] = quantize.output[0]
    nodes = [new for node in graph.node if id(node) not in dropped for new in replaced.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _channels_last_interleave(
    graph: onnx.GraphProto, name: str, source: str, result: str, chw: list[int], blocksize: int
) -> list[onnx.NodeProto]:
    """The nodes computing ``DepthToSpace`` (DCR) of ``source`` (N, C, H, W) into ``result``, through the
    channels-last layout: ``Transpose`` to (N, H, W, C), one ``Transpose`` of (N, H, W, s, s * C/s²) rows
    into (N, H, s, W, s * C/s²), and back to (N, C/s², sH, sW). ONNX Runtime runs an int8 convolution in
    channels-last and wraps it in transposes to and from channels-first, which then cancel against the
    outer two here; what runs is the middle ``Transpose``, which moves blocks of ``s * C/s²`` contiguous
    bytes, where the ``DepthToSpace`` kernel moves them one by one (about 15 µs per image at 14×14×64)."""
    channels, height, width = chw
    depth = channels // (blocksize * blocksize)
    shapes = {
        "rows": [-1, height, width, blocksize, blocksize * depth],
        "out": [-1, height * blocksize, width * blocksize, depth],
    }
    for key, values in shapes.items():
        graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), f"{name}/{key}_shape"))
    return [
        helper.make_node(
            "Transpose", [source], [f"{name}/channels_last"], name=f"{name}/to_channels_last", perm=[0, 2, 3, 1]
        ),
        helper.make_node(
            "Reshape", [f"{name}/channels_last", f"{name}/rows_shape"], [f"{name}/rows"], name=f"{name}/rows"
        ),
        helper.make_node(
            "Transpose", [f"{name}/rows"], [f"{name}/spread"], name=f"{name}/spread", perm=[0, 1, 3, 2, 4]
        ),
        helper.make_node(
            "Reshape", [f"{name}/spread", f"{name}/out_shape"], [f"{name}/interleaved"], name=f"{name}/interleaved"
        ),
        helper.make_node(
            "Transpose", [f"{name}/interleaved"], [result], name=f"{name}/to_channels_first", perm=[0, 3, 1, 2]
        ),
    ]


def bottleneck_nodes(model: onnx.ModelProto) -> list[str]:
    """The convolution writing the narrowest convolution output (the latent), the convolution reading it,
    and the convolution (with the activations between) writing the latent's input."""
    sizes = {name: int(np.prod(shape[1:])) for name, shape in _shapes(model).items() if shape[1:] and all(shape[1:])}
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
