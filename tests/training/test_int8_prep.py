"""The rewrites around int8 quantisation leave the committed autoencoder's output as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from training.int8_prep import (
    CONVOLUTIONS,
    bottleneck_nodes,
    eight_bit_interleaves,
    equalize_activations,
    fold_transposed_batchnorm,
    subpixel_transposed_convolutions,
)
from training.quantize import float32_nodes

GRAPH = Path(__file__).resolve().parents[2] / "models" / "mnist" / "autoencoder.onnx"


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(GRAPH)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Strokes under noise: activations like a caller's digits give, not just noise."""
    rng = np.random.default_rng(0)
    x = np.zeros((32, 28, 28, 1), dtype=np.float32)
    x[:, 6:22, 12:16] = 1.0
    return np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1).astype(np.float32)


def _run(model: onnx.ModelProto, images: np.ndarray, *outputs: str) -> list[np.ndarray]:
    if outputs:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(["denoised", *outputs], {"image": images}))


def test_folding_removes_the_batchnorm_after_each_transposed_convolution(
    model: onnx.ModelProto, images: np.ndarray
) -> None:
    folded = fold_transposed_batchnorm(model)
    transposed = [node for node in folded.graph.node if node.op_type == "ConvTranspose"]
    assert transposed
    assert all(len(node.input) == 3 for node in transposed)  # a bias each
    assert len(folded.graph.node) == len(model.graph.node) - 2 * len(transposed)
    assert not {node.op_type for node in folded.graph.node} & {"Mul", "Add"}
    onnx.checker.check_model(folded, full_check=True)
    np.testing.assert_allclose(_run(folded, images)[0], _run(model, images)[0], atol=1e-5)


def test_equalising_keeps_the_output_and_narrows_each_activation_s_channel_spread(
    model: onnx.ModelProto, images: np.ndarray
) -> None:
    folded = fold_transposed_batchnorm(model)
    relus = [node.output[0] for node in folded.graph.node if node.op_type == "Relu"]
    equalized = equalize_activations(folded, "image", images, strength=0.5)
    before, after = _run(folded, images, *relus), _run(equalized, images, *relus)
    np.testing.assert_allclose(after[0], before[0], atol=1e-5)
    for old, new in zip(before[1:], after[1:], strict=True):  # every ReLU here feeds a convolution
        old_peaks, new_peaks = (np.abs(a).max(axis=(0, 2, 3)) for a in (old, new))
        live = old_peaks > old_peaks.max() * 1e-6
        # Each channel's peak moves toward the tensor's by the square root of the ratio (strength 0.5).
        spread_before = old_peaks.max() / old_peaks[live].min()
        spread_after = new_peaks.max() / new_peaks[live].min()
        np.testing.assert_allclose(spread_after, np.sqrt(spread_before), rtol=1e-3)


def test_equalising_nothing_to_equalise_is_the_identity() -> None:
    x = helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [None, 1, 4, 4])
    y = helper.make_tensor_value_info("denoised", onnx.TensorProto.FLOAT, [None, 1, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["denoised"])], "relu", [x], [y])
    model = helper.make_model(graph)
    assert equalize_activations(model, "image", np.ones((1, 1, 4, 4), np.float32)) == model


def test_the_int8_graph_keeps_the_pixels_the_bottleneck_and_the_logits_float32(model: onnx.ModelProto) -> None:
    nodes = {node.name: node for node in model.graph.node}
    convolutions = [node for node in model.graph.node if node.op_type in CONVOLUTIONS]
    around_latent = bottleneck_nodes(model)
    latent = nodes[around_latent[0]]
    # The latent convolution writes 8 channels at 7x7 (392 floats); one reader, one writer of its input.
    assert (
        onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == latent.input[1])).shape[0] == 8
    )
    assert [nodes[name].op_type for name in around_latent] == ["Conv", "Conv", "Relu", "Conv"]
    assert nodes[around_latent[1]].input[0] == latent.output[0]
    kept = float32_nodes(model)
    assert kept[0] == convolutions[0].name
    assert kept[-3:] == [convolutions[-1].name, "autoencoder_1/decoder_1/denoised_1/Sigmoid", model.graph.node[-1].name]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _transposed(
    size: int, stride: int, pads: list[int], extra: list[int], *, bias: bool = True, relu: bool = False, group: int = 1
) -> onnx.ModelProto:
    """One ``ConvTranspose`` (4 channels in, 3 out per group) on a 5x6 input, a ``Relu`` after it if asked."""
    rng = np.random.default_rng(size * 10 + stride)
    constants = [numpy_helper.from_array(rng.normal(size=(4, 3, size, size)).astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        constants.append(numpy_helper.from_array(rng.normal(size=3 * group).astype(np.float32), "b"))
        inputs.append("b")
    transposed = helper.make_node(
        "ConvTranspose",
        inputs,
        ["t" if relu else "y"],
        group=group,
        strides=[stride, stride],
        kernel_shape=[size, size],
        pads=pads,
        output_padding=extra,
    )
    nodes = [transposed]
    if relu:
        nodes.append(helper.make_node("Relu", ["t"], ["y"]))
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4, 5, 6])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", "c", "h", "w"])
    graph = helper.make_graph(nodes, "transposed", [x], [y], constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("size", "stride", "pads", "extra", "bias", "relu"),
    [
        (3, 2, [0, 0, 1, 1], [0, 0], True, True),  # Keras' "same", as in the committed graphs
        (3, 2, [1, 1, 1, 1], [1, 1], True, False),
        (4, 2, [1, 1, 1, 1], [0, 0], False, True),
        (3, 3, [0, 1, 2, 0], [0, 0], True, False),
        (2, 2, [0, 0, 0, 0], [0, 0], False, False),
        (5, 2, [2, 2, 2, 2], [1, 1], True, True),
        (1, 2, [0, 0, 0, 0], [1, 1], True, False),
    ],
)
def test_a_transposed_convolution_becomes_a_convolution_and_an_interleave_with_the_same_output(
    size: int, stride: int, pads: list[int], extra: list[int], bias: bool, relu: bool
) -> None:
    model = _transposed(size, stride, pads, extra, bias=bias, relu=relu)
    rewritten = subpixel_transposed_convolutions(model)
    onnx.checker.check_model(rewritten, full_check=True)
    ops = [node.op_type for node in rewritten.graph.node]
    assert "ConvTranspose" not in ops
    assert ops[: 3 if relu else 2] == ["Conv", *(["Relu"] if relu else []), "DepthToSpace"]  # ReLU fuses into the Conv
    assert {tensor.name for tensor in rewritten.graph.initializer}.isdisjoint({"w", "b"})  # nothing left unread
    x = np.random.default_rng(5).normal(size=(2, 4, 5, 6)).astype(np.float32)
    (expected,), (got,) = (_session(m).run(["y"], {"x": x}) for m in (model, rewritten))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_transposed_convolution_it_cannot_rewrite_is_left_as_it_is() -> None:
    grouped = _transposed(3, 2, [0, 0, 1, 1], [0, 0], group=2)
    assert subpixel_transposed_convolutions(grouped) == grouped
    unknown = _transposed(3, 2, [0, 0, 1, 1], [0, 0])
    unknown.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"  # its size not known
    assert subpixel_transposed_convolutions(unknown) == unknown


def test_the_committed_autoencoder_rewritten_has_no_transposed_convolution_and_the_same_output(
    model: onnx.ModelProto, images: np.ndarray
) -> None:
    rewritten = subpixel_transposed_convolutions(fold_transposed_batchnorm(model))
    ops = [node.op_type for node in rewritten.graph.node]
    assert "ConvTranspose" not in ops
    assert ops.count("DepthToSpace") == 2
    assert ops.count("Relu") == [node.op_type for node in model.graph.node].count("Relu")
    np.testing.assert_allclose(_run(rewritten, images)[0], _run(model, images)[0], atol=1e-5)


def _interleave(scales: tuple[float, float], zero_points: tuple[int, int], mode: str = "DCR") -> onnx.ModelProto:
    """uint8 -> DequantizeLinear -> DepthToSpace -> QuantizeLinear -> uint8, with these parameters."""
    constants = [
        numpy_helper.from_array(np.array(value, dtype), name)
        for name, value, dtype in [
            ("s_in", scales[0], np.float32),
            ("z_in", zero_points[0], np.uint8),
            ("s_out", scales[1], np.float32),
            ("z_out", zero_points[1], np.uint8),
        ]
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "s_in", "z_in"], ["f"]),
        helper.make_node("DepthToSpace", ["f"], ["g"], blocksize=2, mode=mode),
        helper.make_node("QuantizeLinear", ["g", "s_out", "z_out"], ["y"]),
    ]
    q = helper.make_tensor_value_info("q", onnx.TensorProto.UINT8, ["n", 12, 3, 5])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, ["n", 3, 6, 10])
    return helper.make_model(
        helper.make_graph(nodes, "interleave", [q], [y], constants), opset_imports=[helper.make_opsetid("", 17)]
    )


@pytest.mark.parametrize("batch", [1, 3])
def test_an_interleave_between_the_same_quantisation_moves_the_8_bit_values_in_channels_last(batch: int) -> None:
    model = _interleave((0.05, 0.05), (3, 3))
    rewritten = eight_bit_interleaves(model)
    assert [node.op_type for node in rewritten.graph.node] == [
        "Transpose",
        "Reshape",
        "Transpose",
        "Reshape",
        "Transpose",
    ]
    onnx.checker.check_model(rewritten, full_check=True)
    q = np.random.default_rng(6).integers(0, 256, (batch, 12, 3, 5), dtype=np.uint8)
    (expected,), (got,) = (_session(m).run(["y"], {"q": q}) for m in (model, rewritten))
    np.testing.assert_array_equal(got, expected)


def test_a_column_row_interleave_moves_the_8_bit_values_with_its_own_node() -> None:
    """Only ``DepthToSpace``'s default (DCR) order has the channels-last form here; CRD keeps its node."""
    model = _interleave((0.05, 0.05), (3, 3), mode="CRD")
    rewritten = eight_bit_interleaves(model)
    assert [node.op_type for node in rewritten.graph.node] == ["DepthToSpace"]
    onnx.checker.check_model(rewritten, full_check=True)
    q = np.random.default_rng(7).integers(0, 256, (2, 12, 3, 5), dtype=np.uint8)
    (expected,), (got,) = (_session(m).run(["y"], {"q": q}) for m in (model, rewritten))
    np.testing.assert_array_equal(got, expected)


def test_onnx_runtime_runs_each_interleave_of_the_committed_int8_graph_as_one_transpose(tmp_path: Path) -> None:
    """Its layout pass runs the int8 convolutions channels-last: the transposes it puts around them cancel
    the interleave's outer two, leaving no ``DepthToSpace`` and one ``Transpose`` per interleave."""
    graph = GRAPH.with_name("autoencoder.int8.onnx")
    interleaves = sum(node.name.endswith("/spread") for node in onnx.load(graph).graph.node)
    assert interleaves == 2
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")  # at the level the service runs: all
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(tmp_path / "optimized.onnx").graph.node
    assert not [node for node in nodes if node.op_type == "DepthToSpace"]
    assert [node.name for node in nodes if node.name.endswith(("/to_channels_last", "/to_channels_first"))] == []
    assert sum(node.name.endswith("/spread") for node in nodes) == interleaves


@pytest.mark.parametrize(("scales", "zero_points"), [((0.05, 0.06), (3, 3)), ((0.05, 0.05), (3, 4))])
def test_an_interleave_between_different_quantisations_stays_in_float(
    scales: tuple[float, float], zero_points: tuple[int, int]
) -> None:
    model = _interleave(scales, zero_points)
    assert eight_bit_interleaves(model) == model
