"""The training schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.config import TrainConfig
from training.train import PSNR_LOSS_FLOOR, cosine_lr, finished, psnr_loss


def test_cosine_schedule_falls_from_the_rate_to_its_final_fraction() -> None:
    cfg = TrainConfig(epochs=31, learning_rate=2e-3, final_lr_fraction=0.01)
    rates = np.array([cosine_lr(cfg, epoch) for epoch in range(cfg.epochs)])
    assert rates[0] == np.float64(2e-3)
    assert np.isclose(rates[-1], 2e-5)
    assert np.all(np.diff(rates) < 0)
    assert np.isclose(rates[15], (2e-3 + 2e-5) / 2)  # halfway down at mid-schedule


def test_a_one_epoch_run_uses_the_initial_rate() -> None:
    assert cosine_lr(TrainConfig(epochs=1, learning_rate=1e-3), 0) == 1e-3


def test_psnr_loss_is_minus_each_images_psnr_averaged() -> None:
    target = np.zeros((2, 28, 28, 1), dtype=np.float32)
    output = np.stack([np.full((28, 28, 1), 0.1), np.full((28, 28, 1), 0.01)]).astype(np.float32)
    per_image = np.asarray(psnr_loss(target, output))
    expected = [10 * np.log10(0.1**2 + PSNR_LOSS_FLOOR), 10 * np.log10(0.01**2 + PSNR_LOSS_FLOOR)]
    assert np.allclose(per_image, expected, atol=1e-4)  # about -20 dB and -40 dB: -PSNR of each image
    assert np.isclose(float(psnr_loss(target, target)[0]), -50.0, atol=1e-3)  # a perfect image stops at 50 dB


def test_a_finished_network_is_read_back_with_its_history(tmp_path: Path) -> None:
    assert finished("autoencoder", tmp_path) is None
    (tmp_path / "autoencoder.history.csv").write_text(
        "epoch,learning_rate,loss,val_loss\n0,0.001,-20.5,-21.0\n1,0.0005,-21.5,-21.25\n2,0.0001,-21.75,-21.125\n"
    )
    assert finished("autoencoder", tmp_path) is None  # a history without the saved network: it did not finish
    (tmp_path / "autoencoder.keras").write_bytes(b"saved")
    result = finished("autoencoder", tmp_path)
    assert result is not None
    assert result.epochs_run == 3
    assert result.best_val_loss == -21.25
    assert result.history == {
        "learning_rate": [0.001, 0.0005, 0.0001],
        "loss": [-20.5, -21.5, -21.75],
        "val_loss": [-21.0, -21.25, -21.125],
    }
    (tmp_path / "autoencoder.history.csv").write_text("epoch,learning_rate,loss,val_loss\n")
    assert finished("autoencoder", tmp_path) is None
