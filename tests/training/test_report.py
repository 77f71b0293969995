"""The report's figures: compact, labelled, one panel per loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.evaluate import CONDITIONS
from training.report import denoising_grid, latent_projection, loss_curves


def test_denoising_grid_has_one_clean_row_and_is_compact(tmp_path: Path) -> None:
    clean = np.random.default_rng(0).random((8, 28, 28)).astype(np.float32)
    path = tmp_path / "grid.png"
    denoising_grid(clean, lambda images: np.clip(images, 0, 1), seed=1, path=path)
    width, height = Image.open(path).size
    rows = 1 + 2 * len(CONDITIONS)  # one clean row, then noisy and denoised per condition (not 3 per condition)
    assert height < rows * 90
    assert width < 800


def test_loss_curves_one_panel_per_loss(tmp_path: Path) -> None:
    history = {"loss": [0.3, 0.2, 0.1], "val_loss": [0.35, 0.25, 0.2]}
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    loss_curves({"autoencoder": history}, {"autoencoder": "mse"}, one)
    loss_curves(
        {"autoencoder": history, "reference": history}, {"autoencoder": "mse", "reference": "binary_crossentropy"}, two
    )
    assert Image.open(two).size[0] == 2 * Image.open(one).size[0]


def test_latent_projection_takes_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "latents.png"
    latent_projection(rng.random((50, 7, 7, 2)), rng.integers(0, 10, 50), ["T-shirt/top", *"123456789"], path, 0)
    assert path.stat().st_size > 1000
