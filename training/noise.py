"""Noise models, each seeded through an explicit ``numpy.random.Generator``.

Images are float32 arrays in [0, 1]; every function returns a new array in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

NoiseKind = Literal["gaussian", "shifted-gaussian", "salt-pepper", "speckle", "poisson"]
NOISE_KINDS: tuple[NoiseKind, ...] = ("gaussian", "shifted-gaussian", "salt-pepper", "speckle", "poisson")


def _per_image(level: float | np.ndarray, images: np.ndarray) -> np.ndarray:
    """Broadcast a scalar or a per-image level against a batch of images."""
    level_arr = np.asarray(level, dtype=np.float32)
    return level_arr.reshape(level_arr.shape + (1,) * (images.ndim - level_arr.ndim))


def gaussian(images: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The seeds' additive noise: ``clip(x + sigma * N(0, 1), 0, 1)``."""
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images + _per_image(sigma, images) * noise, 0.0, 1.0)


def shifted_gaussian(images: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seed 002's recipe at ``sigma = 0.5``: ``clip(x + N(sigma, sigma), 0, 1)``, which washes the background grey."""
    level = _per_image(sigma, images)
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    return np.asarray(np.clip(images + level * (1.0 + noise), 0.0, 1.0), dtype=np.float32)


def salt_pepper(images: np.ndarray, amount: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Set a fraction ``amount`` of pixels to 0 or 1, half each."""
    hit = rng.random(images.shape, dtype=np.float32) < _per_image(amount, images)
    salt = rng.random(images.shape, dtype=np.float32) < 0.5
    return np.where(hit, salt.astype(np.float32), images)


def speckle(images: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise: ``clip(x + x * sigma * N(0, 1), 0, 1)``."""
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    return np.asarray(np.clip(images * (1.0 + _per_image(sigma, images) * noise), 0.0, 1.0), dtype=np.float32)


def poisson(images: np.ndarray, peak: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shot noise of a low-light scan: photon counts with ``peak`` expected at a white pixel (lower is noisier)."""
    level = _per_image(peak, images)
    return np.asarray(np.clip(rng.poisson(images * level) / level, 0.0, 1.0), dtype=np.float32)


def corrupt(images: np.ndarray, kind: NoiseKind, level: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind == "gaussian":
        return gaussian(images, level, rng)
    if kind == "shifted-gaussian":
        return shifted_gaussian(images, level, rng)
    if kind == "salt-pepper":
        return salt_pepper(images, level, rng)
    if kind == "speckle":
        return speckle(images, level, rng)
    if kind == "poisson":
        return poisson(images, level, rng)
    raise ValueError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")


@dataclass(frozen=True)
class BlindNoise:
    """Blind training noise: a kind and a level drawn per image, fresh on every call.

    ``weights`` give the share of each kind; levels are uniform in each range.
    """

    gaussian_sigma: tuple[float, float] = (0.0, 0.8)
    shifted_gaussian_sigma: tuple[float, float] = (0.2, 0.7)
    salt_pepper_amount: tuple[float, float] = (0.02, 0.3)
    speckle_sigma: tuple[float, float] = (0.1, 0.8)
    poisson_peak: tuple[float, float] = (4.0, 60.0)
    #: Shares in the order of ``NOISE_KINDS``.
    weights: tuple[float, ...] = (0.42, 0.12, 0.18, 0.18, 0.10)

    def ranges(self) -> dict[NoiseKind, tuple[float, float]]:
        return {
            "gaussian": self.gaussian_sigma,
            "shifted-gaussian": self.shifted_gaussian_sigma,
            "salt-pepper": self.salt_pepper_amount,
            "speckle": self.speckle_sigma,
            "poisson": self.poisson_peak,
        }

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = len(images)
        kinds = rng.choice(len(NOISE_KINDS), size=n, p=np.asarray(self.weights) / sum(self.weights))
        noisy = np.empty_like(images)
        for index, (kind, (low, high)) in enumerate(self.ranges().items()):
            chosen = kinds == index
            if chosen.any():
                levels = rng.uniform(low, high, size=int(chosen.sum())).astype(np.float32)
                noisy[chosen] = corrupt(images[chosen], kind, levels, rng)
        return noisy
