"""Scan artefacts for training: a broad family of things that are not the digit, to be taken away.

The blind noise (:mod:`training.noise`) corrupts each pixel on its own; scans also come back soft, streaked,
dusty, unevenly lit or rescaled. :func:`artefacts` gives each image one or two kinds drawn from a family wider
than any single condition of the release battery (:mod:`training.battery`): blurs of any shape (Gaussian,
possibly elongated, defocus disks, motion lines at any angle), rescans at a lower resolution, lines at any angle
and width (whole or in pieces), dust (specks and blots), uneven lighting (a ramp or a smooth wash), banding, and
a changed tone curve; then light Gaussian noise. The target stays the clean digit: a model trained on them learns
to restore the digit from whatever is not a digit, while the mix's clean share teaches it to leave a clean digit
alone. The parameters are fixed here; :class:`training.uploads.UploadMix` sets their share among the inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

#: Light Gaussian noise after the artefacts, σ drawn per image.
NOISE_SIGMA = (0.0, 0.1)
#: How many kinds an image gets: one, or two with this probability.
TWO_KINDS = 0.35

_SIDE = 28
_YY, _XX = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float32)

Artefact = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _kernel_gaussian(rng: np.random.Generator) -> np.ndarray:
    sx, sy = rng.uniform(0.4, 2.0), rng.uniform(0.4, 2.0)
    angle = rng.uniform(0, np.pi)
    r = 5
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    return np.asarray(np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)), dtype=np.float32)


def disk_kernel(radius: float) -> np.ndarray:
    """A defocus blur's kernel: a disk of ``radius`` px, normalised."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    return np.asarray(kernel / kernel.sum())


def line_kernel(length: int, angle: float) -> np.ndarray:
    """A motion blur's kernel: a line of ``length`` px at ``angle`` (radians), normalised."""
    size = length + (1 - length % 2)
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = size // 2
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        kernel[round(centre + t * np.sin(angle)), round(centre + t * np.cos(angle))] = 1.0
    return np.asarray(kernel / kernel.sum())


def _kernel_disk(rng: np.random.Generator) -> np.ndarray:
    return disk_kernel(rng.uniform(0.7, 2.5))


def _kernel_line(rng: np.random.Generator) -> np.ndarray:
    length = int(rng.integers(3, 10))
    return line_kernel(length, rng.uniform(0, np.pi))


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian (possibly elongated), defocus-disk or motion-line blur."""
    make = (_kernel_gaussian, _kernel_disk, _kernel_line)[int(rng.integers(0, 3))]
    kernel = make(rng)
    return np.asarray(ndimage.convolve(image, kernel / kernel.sum(), mode="constant"), dtype=np.float32)


def rescan(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scanned at 8 to 20 pixels a side, then scaled back (bilinear or nearest)."""
    low = int(rng.integers(8, 21))
    order = int(rng.integers(0, 2))
    small = ndimage.zoom(image, low / _SIDE, order=1)
    back = ndimage.zoom(small, _SIDE / small.shape[0], order=order)[:_SIDE, :_SIDE]
    out = np.zeros_like(image)
    out[: back.shape[0], : back.shape[1]] = back
    return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def lines(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to four bright or dark lines at any angle, 0.5 to 2 px wide, whole or a piece."""
    out = image.copy()
    for _ in range(int(rng.integers(1, 5))):
        angle = rng.uniform(0, np.pi)
        if rng.random() < 0.5:  # scanners streak along the axes
            angle = float(rng.integers(0, 2)) * np.pi / 2
        x0, y0 = rng.uniform(0, _SIDE, size=2)
        distance = np.abs((_XX - x0) * np.sin(angle) - (_YY - y0) * np.cos(angle))
        mask = distance < rng.uniform(0.5, 2.0) / 2 + 0.3
        if rng.random() < 0.4:  # a piece of a line
            along = (_XX - x0) * np.cos(angle) + (_YY - y0) * np.sin(angle)
            start = rng.uniform(-_SIDE, _SIDE / 2)
            mask &= (along > start) & (along < start + rng.uniform(4, _SIDE))
        level = rng.uniform(0.3, 1.0)
        out = np.where(mask, np.maximum(out, level) if rng.random() < 0.75 else out * (1 - level), out)
    return np.asarray(out, dtype=np.float32)


def dust(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Specks and blots: 2 to 25 bright or dark round marks, 0.5 to 2.5 px across."""
    out = image.copy()
    for _ in range(int(rng.integers(2, 26))):
        x0, y0 = rng.uniform(0, _SIDE, size=2)
        mask = (_XX - x0) ** 2 + (_YY - y0) ** 2 < rng.uniform(0.25, 1.6) ** 2 + 0.2
        level = rng.uniform(0.3, 1.0)
        out = np.where(mask, np.maximum(out, level) if rng.random() < 0.75 else out * (1 - level), out)
    return np.asarray(out, dtype=np.float32)


def lighting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uneven lighting: a ramp at any angle or a smooth wash, up to 0.45 at its brightest."""
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (_XX - _SIDE / 2) * np.cos(angle) + (_YY - _SIDE / 2) * np.sin(angle)
        field = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    else:
        coarse = rng.random((4, 4)).astype(np.float32)
        field = ndimage.zoom(coarse, _SIDE / 4, order=3)[:_SIDE, :_SIDE]
        field = (field - field.min()) / max(float(field.max() - field.min()), 1e-6)
    return np.asarray(np.clip(image + rng.uniform(0.1, 0.45) * field, 0.0, 1.0), dtype=np.float32)


def banding(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Periodic bands at any angle, period 2 to 8 px, up to 0.3 deep."""
    angle = rng.uniform(0, np.pi)
    phase = (_XX * np.cos(angle) + _YY * np.sin(angle)) * 2 * np.pi / rng.uniform(2, 8)
    wave = 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * np.pi))
    return np.asarray(np.clip(image + rng.uniform(0.05, 0.3) * wave, 0.0, 1.0), dtype=np.float32)


def tone(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A changed tone curve: gamma 0.4 to 2.5, the ink's level scaled by 0.5 to 1."""
    gamma = float(np.exp(rng.uniform(np.log(0.4), np.log(2.5))))
    return np.asarray(rng.uniform(0.5, 1.0) * image**gamma, dtype=np.float32)


KINDS: tuple[Artefact, ...] = (blur, rescan, lines, dust, lighting, banding, tone)
#: Blurs and lines twice as often as the rest: they hide the strokes themselves.
SHARES = np.array([2, 1, 2, 1, 1, 1, 1], dtype=np.float64) / 9


def artefacts(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each clean (n, 28, 28) image with one or two kinds from :data:`KINDS`, then light Gaussian noise."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        count = 2 if rng.random() < TWO_KINDS else 1
        for kind in rng.choice(len(KINDS), size=count, replace=False, p=SHARES):
            image = KINDS[int(kind)](image, rng)
        sigma = rng.uniform(*NOISE_SIGMA)
        out[i] = np.clip(image + sigma * rng.standard_normal(image.shape, dtype=np.float32), 0.0, 1.0)
    return out
