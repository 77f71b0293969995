"""The training schedule."""

from __future__ import annotations

import numpy as np

from training.config import TrainConfig
from training.train import cosine_lr


def test_cosine_schedule_falls_from_the_rate_to_its_final_fraction() -> None:
    cfg = TrainConfig(epochs=31, learning_rate=2e-3, final_lr_fraction=0.01)
    rates = np.array([cosine_lr(cfg, epoch) for epoch in range(cfg.epochs)])
    assert rates[0] == np.float64(2e-3)
    assert np.isclose(rates[-1], 2e-5)
    assert np.all(np.diff(rates) < 0)
    assert np.isclose(rates[15], (2e-3 + 2e-5) / 2)  # halfway down at mid-schedule


def test_a_one_epoch_run_uses_the_initial_rate() -> None:
    assert cosine_lr(TrainConfig(epochs=1, learning_rate=1e-3), 0) == 1e-3
