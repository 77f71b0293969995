"""Noise: values stay in [0, 1], the same seed gives the same noise, levels behave."""

from __future__ import annotations

import numpy as np
import pytest

from training.noise import NOISE_KINDS, BlindNoise, corrupt, gaussian, salt_pepper

IMAGES = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_stays_in_range_and_is_deterministic(kind: str) -> None:
    a = corrupt(IMAGES, kind, 0.5, np.random.default_rng(7))  # type: ignore[arg-type]
    b = corrupt(IMAGES, kind, 0.5, np.random.default_rng(7))  # type: ignore[arg-type]
    c = corrupt(IMAGES, kind, 0.5, np.random.default_rng(8))  # type: ignore[arg-type]
    assert a.min() >= 0.0
    assert a.max() <= 1.0
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_is_the_seeds_formula() -> None:
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    expected = np.clip(IMAGES + 0.3 * rng_b.standard_normal(IMAGES.shape, dtype=np.float32), 0, 1)
    assert np.allclose(gaussian(IMAGES, 0.3, rng_a), expected)


def test_salt_pepper_amount_is_the_fraction_changed() -> None:
    flat = np.full((64, 28, 28, 1), 0.5, dtype=np.float32)
    noisy = salt_pepper(flat, 0.2, np.random.default_rng(1))
    assert abs(np.mean(noisy != 0.5) - 0.2) < 0.01
    assert set(np.unique(noisy)) == {0.0, 0.5, 1.0}


def test_per_image_levels() -> None:
    zeros = np.full((2, 28, 28, 1), 0.5, dtype=np.float32)
    noisy = gaussian(zeros, np.array([0.0, 0.4], dtype=np.float32), np.random.default_rng(2))
    assert np.all(noisy[0] == 0.5)
    assert noisy[1].std() > 0.2


def test_blind_noise_is_seeded_and_in_range() -> None:
    noise = BlindNoise()
    a = noise.apply(IMAGES, np.random.default_rng(5))
    b = noise.apply(IMAGES, np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert a.shape == IMAGES.shape
    assert a.min() >= 0.0
    assert a.max() <= 1.0
