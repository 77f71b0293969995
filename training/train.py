"""Fit a model on a tf.data pipeline of blindly corrupted images, fresh noise every epoch, with a share
of images like callers send (:class:`training.uploads.UploadMix`)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from denoise_bundle import IMAGE_SHAPE
from training.config import TrainConfig
from training.noise import BlindNoise
from training.uploads import UploadMix


def split_validation(images: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = max(1, round(len(images) * fraction))
    return images[order[n_val:]], images[order[:n_val]]


def noisy_batches(
    clean: np.ndarray, noise: BlindNoise, mix: UploadMix, batch_size: int, seed: int, epochs: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (input, target) batches; each epoch reshuffles and draws new corruptions from ``[seed, epoch]``."""
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(clean))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield mix.apply(clean[order[start : start + batch_size]], rng, noise)


def training_dataset(clean: np.ndarray, cfg: TrainConfig) -> tuple[tf.data.Dataset, int]:
    spec = tf.TensorSpec((cfg.batch_size, *IMAGE_SHAPE), tf.float32)
    dataset = tf.data.Dataset.from_generator(
        lambda: noisy_batches(clean, cfg.noise, cfg.uploads, cfg.batch_size, cfg.seed, cfg.epochs),
        output_signature=(spec, spec),
    ).prefetch(tf.data.AUTOTUNE)
    return dataset, len(clean) // cfg.batch_size


def validation_data(clean: np.ndarray, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """A fixed corrupted validation set (inputs, targets), so epochs are compared on the same images."""
    rng = np.random.default_rng([cfg.seed, 10_000])
    return cfg.uploads.apply(clean, rng, cfg.noise)


#: The PSNR loss's floor on an image's mean squared error (50 dB): a perfect image adds no infinite gradient.
PSNR_LOSS_FLOOR = 1e-5


def psnr_loss(target: tf.Tensor, output: tf.Tensor) -> tf.Tensor:
    """Minus each image's PSNR in dB (for images in [0, 1]); Keras averages it over the batch."""
    mse = tf.reduce_mean(tf.square(target - output), axis=[1, 2, 3])
    return (10.0 / math.log(10.0)) * tf.math.log(mse + PSNR_LOSS_FLOOR)


def cosine_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (from 0): ``learning_rate`` first, ``final_lr_fraction`` of it last."""
    progress = epoch / max(1, cfg.epochs - 1)
    floor = cfg.learning_rate * cfg.final_lr_fraction
    return floor + (cfg.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainResult:
    history: dict[str, list[float]]
    epochs_run: int
    best_val_loss: float


def finished(name: str, work_dir: Path) -> TrainResult | None:
    """What :func:`fit` returned for the network ``name`` saved in ``work_dir`` by a run that got that far
    (its ``.keras`` file and its history), or ``None`` where it did not."""
    history_path = work_dir / f"{name}.history.csv"
    if not (work_dir / f"{name}.keras").is_file() or not history_path.is_file():
        return None
    with history_path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return None
    losses = {key: [float(row[key]) for row in rows] for key in rows[0] if key != "epoch"}
    return TrainResult(history=losses, epochs_run=len(rows), best_val_loss=min(losses["val_loss"]))


def fit(
    model: keras.Model, train_clean: np.ndarray, val_clean: np.ndarray, cfg: TrainConfig, work_dir: Path
) -> TrainResult:
    """Compile and fit ``model``; the best weights (by validation loss) are restored at the end."""
    keras.utils.set_random_seed(cfg.seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    loss = psnr_loss if cfg.loss == "psnr" else cfg.loss
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss)
    dataset, steps = training_dataset(train_clean, cfg)
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(work_dir / f"{model.name}.best.weights.h5"), save_best_only=True, save_weights_only=True
        ),
        keras.callbacks.EarlyStopping(patience=cfg.early_stopping_patience, restore_best_weights=True),
        keras.callbacks.LearningRateScheduler(lambda epoch: cosine_lr(cfg, epoch)),
        keras.callbacks.CSVLogger(str(work_dir / f"{model.name}.history.csv")),
    ]
    history = model.fit(
        dataset,
        steps_per_epoch=steps,
        epochs=cfg.epochs,
        validation_data=validation_data(val_clean, cfg),
        batch_size=cfg.batch_size,
        shuffle=False,  # the generator shuffles, seeded, every epoch
        callbacks=callbacks,
        verbose=2,
    )
    losses = {key: [float(v) for v in values] for key, values in history.history.items()}
    return TrainResult(history=losses, epochs_run=len(losses["loss"]), best_val_loss=min(losses["val_loss"]))
