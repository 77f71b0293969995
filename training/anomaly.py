"""The anomaly score: how unlike the training data an input is (higher = less typical).

Three methods are measured side by side on the same inputs, and the bundle ships the learned one
when it wins (``evaluate_methods`` says which did):

- ``reconstruction error``: mean squared difference between the input and its denoised output.
  Heavy noise raises it as much as strangeness does.
- ``latent mahalanobis``: distance of the input's latent to the nearest class mean, under the
  classes' shared covariance, fitted on clean training latents.
- ``learned head``: a small convolutional classifier on the raw input, trained to tell this
  dataset's images (under every training noise, clean included) from outlier-exposure images
  under the same noises: the other dataset's training split, this dataset's own images inverted
  (dark on light), random pen strokes, and typographic symbols. Latin letters are never trained
  on: they test whether the score generalises beyond what it has seen. Its logit is the score.

The threshold is the ``CALIBRATION_QUANTILE`` of the scores of held-out in-distribution inputs
(the validation split, pooled noises), so about 2% of typical inputs are flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from sklearn.metrics import roc_auc_score

from denoise_bundle import IMAGE_SHAPE
from training.noise import BlindNoise, NoiseKind, corrupt
from training.uploads import UPLOADS, UploadMix, faded, rotated, shifted, upload_pair

SCORE_INPUT = "image"
SCORE_OUTPUT = "anomaly_score"
METHOD = "learned head"
CALIBRATION_QUANTILE = 0.98
#: The evaluation's noises, pooled: Gaussian sigma 0 to 0.5 and every other training recipe.
POOLED_CONDITIONS: tuple[tuple[NoiseKind, float], ...] = (
    ("gaussian", 0.0),
    ("gaussian", 0.1),
    ("gaussian", 0.2),
    ("gaussian", 0.3),
    ("gaussian", 0.4),
    ("gaussian", 0.5),
    ("shifted-gaussian", 0.5),
    ("salt-pepper", 0.1),
    ("speckle", 0.5),
    ("poisson", 5.0),
)

#: The score's own share of images like callers send, on typical and outlier images alike: moved and faded
#: images often enough that neither position nor fading is a cue (a moved or faded digit is still a digit).
SCORER_UPLOADS = UploadMix(moved=0.35, clean=0.1, faded=0.15, jpeg=0.08)

#: Scores a float32 batch (n, 28, 28) in [0, 1].
Scorer = Callable[[np.ndarray], np.ndarray]


def build_scorer(widths: tuple[int, int, int] = (16, 32, 32)) -> keras.Model:
    """A small classifier, image -> logit, at about 0.8 M multiply-adds per image (the autoencoder: 23 M)."""
    image = keras.Input(shape=IMAGE_SHAPE, name=SCORE_INPUT)
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", activation="relu")(image)
    x = layers.Conv2D(widths[1], 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(widths[2], 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
    score = layers.Dense(1, name=SCORE_OUTPUT)(x)
    return keras.Model(image, score, name="scorer")


def pooled_noise(images: np.ndarray, seed: int) -> np.ndarray:
    """Each image (float32 in [0, 1]) under one of ``POOLED_CONDITIONS``, in equal shares, seeded."""
    rng = np.random.default_rng(seed)
    which = rng.permutation(len(images)) % len(POOLED_CONDITIONS)
    noisy = np.empty_like(images)
    for index, (kind, level) in enumerate(POOLED_CONDITIONS):
        chosen = which == index
        if chosen.any():
            noisy[chosen] = corrupt(images[chosen], kind, level, rng)
    return noisy


@dataclass(frozen=True)
class ScorerData:
    """Float32 (n, 28, 28, 1) images in [0, 1], clean: noise is drawn fresh per epoch."""

    typical: np.ndarray
    outliers: np.ndarray


def _batches(
    data: ScorerData, noise: BlindNoise, mix: UploadMix, batch_size: int, seed: int, epochs: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Balanced batches: half typical (label 0), half outliers (label 1), both under the autoencoder's
    training corruptions (``mix``: moved, faded and compressed alike, so that neither position nor
    fading tells them apart; a moved or faded digit is still a digit)."""
    half = batch_size // 2
    labels = np.concatenate([np.zeros(half), np.ones(half)]).astype(np.float32)[:, None]
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, 30_000 + epoch])
        typical = rng.permutation(len(data.typical))
        for start in range(0, len(typical) - half + 1, half):
            outliers = rng.integers(0, len(data.outliers), size=half)
            clean = np.concatenate([data.typical[typical[start : start + half]], data.outliers[outliers]])
            yield mix.apply(clean, rng, noise)[0], labels


def fit_scorer(
    model: keras.Model,
    train: ScorerData,
    noise: BlindNoise,
    mix: UploadMix,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 256,
) -> dict[str, list[float]]:
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)],
    )
    spec = (
        tf.TensorSpec((batch_size, *IMAGE_SHAPE), tf.float32),
        tf.TensorSpec((batch_size, 1), tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(
        lambda: _batches(train, noise, mix, batch_size, seed, epochs), output_signature=spec
    ).prefetch(tf.data.AUTOTUNE)
    steps = len(train.typical) // (batch_size // 2)
    history = model.fit(dataset, steps_per_epoch=steps, epochs=epochs, shuffle=False, verbose=2)
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def reconstruction_error(denoise: Callable[[np.ndarray], np.ndarray]) -> Scorer:
    def score(images: np.ndarray) -> np.ndarray:
        return np.asarray(np.mean((images - denoise(images)) ** 2, axis=(1, 2)))

    return score


def latent_mahalanobis(
    encode: Callable[[np.ndarray], np.ndarray], train_images: np.ndarray, train_labels: np.ndarray
) -> Scorer:
    """Distance to the nearest class mean of clean training latents, under their shared (shrunk) covariance."""
    latents = encode(train_images).reshape(len(train_images), -1).astype(np.float64)
    classes = np.unique(train_labels)
    means = np.stack([latents[train_labels == c].mean(axis=0) for c in classes])
    centred = latents - means[np.searchsorted(classes, train_labels)]
    covariance = np.cov(centred, rowvar=False)
    covariance += (1e-3 * np.trace(covariance) / len(covariance) + 1e-9) * np.eye(len(covariance))
    precision = np.linalg.pinv(covariance, hermitian=True)  # dead latent channels leave it singular

    def score(images: np.ndarray) -> np.ndarray:
        z = encode(images).reshape(len(images), -1).astype(np.float64)
        distances = [np.einsum("ij,jk,ik->i", z - m, precision, z - m) for m in means]
        return np.asarray(np.sqrt(np.min(distances, axis=0)))

    return score


def rates(typical_scores: np.ndarray, outlier_scores: np.ndarray, threshold: float) -> dict[str, float]:
    labels = np.concatenate([np.zeros(len(typical_scores)), np.ones(len(outlier_scores))])
    return {
        "auroc": float(roc_auc_score(labels, np.concatenate([typical_scores, outlier_scores]))),
        "flagged": float(np.mean(outlier_scores > threshold)),
    }


def in_distribution(images: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The dataset's own images as callers send them, all typical: under the pooled noises, and shifted,
    rotated and faded as the evaluation's upload conditions make them (float32 (n, 28, 28) in [0, 1])."""
    kinds = {"pooled noise": pooled_noise(images, seed)}
    for upload in UPLOADS:
        if upload.make in (shifted, rotated, faded):
            kinds[upload.make.__name__] = upload_pair(images, upload, seed)[1]
    return kinds


def evaluate_methods(
    methods: dict[str, Scorer],
    calibration: np.ndarray,
    typical: dict[str, np.ndarray],
    out_sets: dict[str, np.ndarray],
    shipped: str,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Every method's AUROC against every out-set, with its threshold from the calibration images, and its
    false flags on the typical images, in all and by kind; returns the evaluation and every score (for
    the figure). All image sets are already corrupted."""
    results: dict[str, Any] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, method in methods.items():
        threshold = float(np.quantile(method(calibration), CALIBRATION_QUANTILE))
        by_kind = {kind: method(images) for kind, images in typical.items()}
        own = np.concatenate(list(by_kind.values()))
        scores[name] = {"typical": own, **{out: method(images) for out, images in out_sets.items()}}
        results[name] = {
            "threshold": threshold,
            "false_flags": float(np.mean(own > threshold)),
            "false_flags_by_kind": {kind: float(np.mean(values > threshold)) for kind, values in by_kind.items()},
            "against": {out: rates(own, scores[name][out], threshold) for out in out_sets},
        }
    return {"shipped": shipped, "methods": results}, scores
