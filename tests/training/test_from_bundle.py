"""A released bundle's graphs back as Keras models: the same network, ready to train on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.server import MODELS
from training import from_bundle
from training.config import Architecture, TrainConfig
from training.quantize import onnx_denoiser


def _architecture(bundle: Path) -> Architecture:
    released = json.loads((bundle / "manifest.json").read_text())["training"]["architecture"]
    widths = (int(released["widths"][0]), int(released["widths"][1]), int(released["widths"][2]))
    return Architecture(widths, int(released["latent_channels"]), int(released["depth_7"]), int(released["refine_28"]))


def _inputs(count: int = 256) -> np.ndarray:
    rng = np.random.default_rng(7)
    clean = np.zeros((count, 28, 28, 1), dtype=np.float32)
    for image in clean:  # blocky light shapes on black, as digits are
        top, left = rng.integers(4, 16, size=2)
        image[top : top + 8, left : left + 3] = 1.0
        image[top : top + 3, left : left + 8] = 0.8
    cfg = TrainConfig()
    inputs, _ = cfg.uploads.apply(clean, rng, cfg.noise)
    return inputs


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_the_unfolded_autoencoder_is_the_graph_in_inference_and_close_to_it_in_training(name: str) -> None:
    bundle = MODELS / name
    inputs = _inputs()
    models = from_bundle.autoencoder(bundle, _architecture(bundle), inputs)
    graph = onnx_denoiser(bundle / "autoencoder.onnx")(inputs[..., 0])
    inferred = models.autoencoder.predict(inputs, verbose=0)[..., 0]
    assert np.max(np.abs(inferred - graph)) < from_bundle.TOLERANCE
    # In training a normalisation uses the batch's statistics: measured on such images, they are the ones set.
    trained = np.asarray(models.autoencoder(inputs, training=True))[..., 0]
    assert np.mean(np.abs(trained - graph)) < 0.01
    # The encoder and decoder are the autoencoder's halves, as the bundle's own graphs are.
    latent = models.encoder.predict(inputs, verbose=0)
    assert latent.shape[1:] == (7, 7, 8)
    assert np.max(np.abs(models.decoder.predict(latent, verbose=0)[..., 0] - graph)) < from_bundle.TOLERANCE


def test_a_graph_of_another_architecture_is_refused() -> None:
    with pytest.raises(from_bundle.GraphMismatch, match="has 15 convolutions"):
        from_bundle.autoencoder(MODELS / "mnist", Architecture(depth_7=2), _inputs(32))


def test_the_scorer_is_the_graph() -> None:
    import onnxruntime as ort

    inputs = _inputs()
    scorer = from_bundle.scorer(MODELS / "mnist", inputs)
    session = ort.InferenceSession(str(MODELS / "mnist" / "scorer.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {session.get_inputs()[0].name: inputs})
    assert np.max(np.abs(scorer.predict(inputs, verbose=0) - expected)) < from_bundle.TOLERANCE
