"""Test images: PNG encoding and decoding, and digit-like strokes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png(pixels: np.ndarray, mode: str | None = None, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def digit(seed: int) -> np.ndarray:
    """A light stroke on black, different for every seed, like the images the models learned."""
    rng = np.random.default_rng(seed)
    image = np.zeros((28, 28), dtype=np.uint8)
    row, col = rng.integers(6, 22, size=2)
    image[row - 4 : row + 4, max(col - 1, 0) : col + 2] = 255
    image[max(row - 5, 0), 6:22] = rng.integers(100, 256)
    noisy = image.astype(np.float32) + rng.normal(0, 60, size=image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.mode == "L"
        assert image.size == (28, 28)
        return np.asarray(image)


def assert_int8_close(int8: np.ndarray, float32: np.ndarray) -> None:
    """The int8 autoencoder's images against the float32 graph's (grey levels, 0-255): the bundle's gate is on
    PSNR at export; here, per pixel, half a grey level on average and never more than 16 apart."""
    difference = np.abs(np.asarray(int8, dtype=np.float64) - np.asarray(float32, dtype=np.float64))
    assert difference.mean() < 0.5, difference.mean()
    assert difference.max() <= 16, difference.max()
