"""A bundle's ONNX graphs back as Keras models, to continue training a released model without its run folder.

The exported autoencoder has each batch normalisation folded into the convolution before it (a scaled
kernel and a bias). :func:`autoencoder` builds the Keras network of the bundle's architecture and unfolds
them again: each convolution gets the folded kernel, and each normalisation gets as its statistics the
mean and variance of that kernel's output over ``images`` (the inputs training will show it), with a scale
and a shift that give back the folded bias. In inference the network is then the graph exactly; in
training, where a normalisation uses the batch's own statistics, it starts where the release stood instead
of from a rescaled copy. :func:`scorer` copies the anomaly head, which has no normalisation. Both check the
Keras model against the graph on the same images and refuse a graph that does not map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from training.anomaly import build_scorer
from training.config import Architecture
from training.model import Autoencoder, build_autoencoder

#: The largest difference, on any pixel or score, allowed between the Keras model and the graph.
TOLERANCE = 1e-4


WEIGHTED = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense, keras.layers.BatchNormalization)


class GraphMismatch(ValueError):
    """The bundle's graph is not the network this module builds."""


@dataclass
class _Layer:
    """One convolution or dense layer of the graph, its weights as the graph holds them."""

    op: str
    weight: np.ndarray
    bias: np.ndarray | None
    output: str
    scale: np.ndarray | None = None


def _layers(model: onnx.ModelProto) -> list[_Layer]:
    """The weighted layers in graph order; a transposed convolution's folded normalisation (the ``Mul`` and
    ``Add`` after it) becomes its scale and bias."""
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    found: list[_Layer] = []
    for node in model.graph.node:
        held = [weights[name] for name in node.input if name in weights]
        if node.op_type in ("Conv", "ConvTranspose", "MatMul"):
            found.append(_Layer(node.op_type, held[0], held[1] if len(held) > 1 else None, node.output[0]))
        elif node.op_type in ("Mul", "Add") and held and found and found[-1].op == "ConvTranspose":
            layer = found[-1]
            if node.op_type == "Mul" and layer.scale is None and layer.bias is None:
                layer.scale = held[0].reshape(-1)
            elif node.op_type == "Add" and layer.bias is None:
                layer.bias = held[0].reshape(-1)
        elif node.op_type == "Add" and held and found and found[-1].op == "MatMul" and found[-1].bias is None:
            found[-1].bias = held[0].reshape(-1)
    return found


def _run(model: onnx.ModelProto, images: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """``outputs`` of ``model`` (intermediate tensors too) on NHWC float32 ``images``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {out.name for out in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs if name not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.astype(np.float32)}
    return [np.asarray(value) for value in session.run(outputs, feed)]


def _weighted(model: keras.Model) -> list[keras.layers.Layer]:
    """Convolution, dense and normalisation layers in the order they were built, through nested models."""
    found: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _weighted(layer)
        elif isinstance(layer, WEIGHTED):
            found.append(layer)
    return found


def _kernel(layer: _Layer) -> np.ndarray:
    """The graph's weight in Keras' layout: Conv (out, in, h, w) and ConvTranspose (in, out, h, w) to
    (h, w, in, out) and (h, w, out, in); MatMul's is Dense's already."""
    if layer.op == "MatMul":
        return layer.weight
    weight = layer.weight
    if layer.scale is not None:
        weight = weight * layer.scale.reshape(1, -1, 1, 1)
    return np.transpose(weight, (2, 3, 1, 0))


def _check(keras_model: keras.Model, graph: onnx.ModelProto, images: np.ndarray, bundle: Path, what: str) -> None:
    (expected,) = _run(graph, images, [graph.graph.output[0].name])
    got = keras_model.predict(images, batch_size=256, verbose=0)
    worst = float(np.max(np.abs(got.reshape(expected.shape) - expected)))
    if worst > TOLERANCE:
        raise GraphMismatch(f"{bundle}: the Keras {what} differs from {what}.onnx by up to {worst:.2g}")


def autoencoder(bundle: Path, arch: Architecture, images: np.ndarray) -> Autoencoder:
    """The bundle's autoencoder as a Keras :class:`Autoencoder` of ``arch``, its normalisations' statistics
    measured on ``images`` (float32 (n, 28, 28, 1) inputs like training's)."""
    graph = onnx.load(str(bundle / "autoencoder.onnx"))
    layers = _layers(graph)
    models = build_autoencoder(arch)
    keras_layers = _weighted(models.autoencoder)
    convolutions = [layer for layer in keras_layers if not isinstance(layer, keras.layers.BatchNormalization)]
    if len(convolutions) != len(layers):
        raise GraphMismatch(
            f"{bundle}/autoencoder.onnx has {len(layers)} convolutions; the architecture {arch} has {len(convolutions)}"
        )
    # The folded convolutions' outputs, before their bias, over the images: each normalisation's statistics.
    outputs = _run(graph, images, [layer.output for layer in layers])
    normalised: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for index, (layer, output) in enumerate(zip(layers, outputs, strict=True)):
        raw = output if layer.scale is None else output * layer.scale.reshape(1, -1, 1, 1)
        if layer.op == "Conv" and layer.bias is not None:
            raw = raw - layer.bias.reshape(1, -1, 1, 1)
        normalised[index] = (raw.mean(axis=(0, 2, 3)), raw.var(axis=(0, 2, 3)))
    at = 0
    for position, keras_layer in enumerate(keras_layers):
        if isinstance(keras_layer, keras.layers.BatchNormalization):
            continue
        layer = layers[at]
        follows = keras_layers[position + 1] if position + 1 < len(keras_layers) else None
        bias = (
            layer.bias
            if layer.bias is not None
            else np.zeros(_kernel(layer).shape[-2 if layer.op == "ConvTranspose" else -1])
        )
        if isinstance(follows, keras.layers.BatchNormalization):
            mean, var = normalised[at]
            var = np.maximum(var, 1e-6)
            keras_layer.set_weights([_kernel(layer)])
            epsilon = follows.epsilon
            follows.set_weights([np.sqrt(var + epsilon), bias + mean, mean, var])
        else:
            keras_layer.set_weights([_kernel(layer), bias])
        at += 1
    _check(models.autoencoder, graph, images[:512], bundle, "autoencoder")
    return models


def scorer(bundle: Path, images: np.ndarray) -> keras.Model:
    """The bundle's anomaly head as a Keras model, checked against ``scorer.onnx`` on ``images``."""
    graph = onnx.load(str(bundle / "scorer.onnx"))
    layers = _layers(graph)
    model = build_scorer()
    keras_layers = _weighted(model)
    if len(keras_layers) != len(layers):
        raise GraphMismatch(f"{bundle}/scorer.onnx has {len(layers)} weighted layers; the head has {len(keras_layers)}")
    for keras_layer, layer in zip(keras_layers, layers, strict=True):
        keras_layer.set_weights([_kernel(layer), layer.bias])
    _check(model, graph, images[:512], bundle, "scorer")
    return model
