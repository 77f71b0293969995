"""The rewrites before int8 quantisation leave the committed autoencoder's output as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from training.int8_prep import CONVOLUTIONS, bottleneck_nodes, equalize_activations, fold_transposed_batchnorm
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
