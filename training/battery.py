"""The release battery: every row of the evaluation, and the uploads a model meets beyond them.

Each row turns clean test images into a (target, input) pair, as :mod:`training.uploads` does: the
target is what a perfect denoiser returns (the clean digit, or the digit as moved or re-stroked when the
row changes the digit itself). The rows, in order:

- every noise condition of the evaluation table (:data:`training.evaluate.CONDITIONS`) and every upload
  condition (:data:`training.uploads.UPLOADS`), with their own seeds, so that their figures are the
  model card's;
- :data:`EXTRA`, fixed here once (parameters in the labels and constants below), each drawn per image
  from ``numpy.random.Generator([seed, 40_000 + index])``: defocus and motion blur under light noise,
  bright line artefacts (scanner streaks) under light noise, low resolution, heavier and lighter strokes
  under Gaussian noise, low-light (few photons) noise, impulse noise after JPEG compression, small
  shifts and rotations together, and faded scans under moderate noise.

:mod:`training.release` compares a candidate bundle with the releases it would replace on this battery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.artefacts import disk_kernel, line_kernel
from training.evaluate import CONDITIONS, noisy_test_set
from training.noise import gaussian
from training.uploads import UPLOADS, fade_images, jpeg_images, upload_pair

Pair = tuple[np.ndarray, np.ndarray]

LIGHT_SIGMA = 0.05
SEEDS_SIGMA = 0.5
#: Defocus: a disk of this radius (px), drawn per image.
DEFOCUS_RADIUS = (1.0, 2.0)
#: Motion: a line of this length (px) at any angle, drawn per image.
MOTION_LENGTH = (4, 8)
#: Streaks: this many full-length lines, horizontal or vertical, of this brightness, one pixel wide.
STREAKS = (1, 3)
STREAK_LEVEL = (0.5, 1.0)
#: Low resolution: scanned at this size, then scaled back to 28x28 (bilinear), light noise.
LOW_SIDE = (10, 16)
#: Strokes: one grey dilation or erosion of this size, then Gaussian noise at this level.
STROKE_SIZE = 2
STROKE_SIGMA = 0.3
#: Low light: this many photons per white pixel (Poisson).
PHOTONS = (1.0, 3.0)
#: Impulse after compression: JPEG at this quality, then this share of pixels set to 0 or 1.
IMPULSE_JPEG_QUALITY = (30, 60)
IMPULSE_AMOUNT = 0.05
#: Shifted and turned together, under Gaussian noise at this level.
MOVE_PX = 2
MOVE_DEG = 10.0
MOVE_SIGMA = 0.3
#: Faded scans (as the upload row) under moderate noise.
FADED_SIGMA = 0.2


def _each(images: np.ndarray, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.asarray([change(image) for image in images], dtype=np.float32).reshape(images.shape)


def defocus(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    radii = rng.uniform(*DEFOCUS_RADIUS, size=len(clean))
    blurred = np.asarray(
        [ndimage.convolve(image, disk_kernel(float(r)), mode="constant") for image, r in zip(clean, radii, strict=True)]
    )
    return clean, gaussian(blurred.astype(np.float32), LIGHT_SIGMA, rng)


def motion(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    lengths = rng.integers(MOTION_LENGTH[0], MOTION_LENGTH[1] + 1, size=len(clean))
    angles = rng.uniform(0, np.pi, size=len(clean))
    blurred = np.asarray(
        [
            ndimage.convolve(image, line_kernel(int(n), float(a)), mode="constant")
            for image, n, a in zip(clean, lengths, angles, strict=True)
        ]
    )
    return clean, gaussian(blurred.astype(np.float32), LIGHT_SIGMA, rng)


def streaks(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    sent = clean.copy()
    side = clean.shape[1]
    for image in sent:
        for _ in range(int(rng.integers(STREAKS[0], STREAKS[1] + 1))):
            level, where = float(rng.uniform(*STREAK_LEVEL)), int(rng.integers(0, side))
            if rng.random() < 0.5:
                image[where, :] = np.maximum(image[where, :], level)
            else:
                image[:, where] = np.maximum(image[:, where], level)
    return clean, gaussian(sent, LIGHT_SIGMA, rng)


def low_resolution(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    sides = rng.integers(LOW_SIDE[0], LOW_SIDE[1] + 1, size=len(clean))
    side = clean.shape[1]

    def rescan(image: np.ndarray, low: int) -> np.ndarray:
        small = ndimage.zoom(image, low / side, order=1)
        return np.asarray(np.clip(ndimage.zoom(small, side / small.shape[0], order=1)[:side, :side], 0.0, 1.0))

    sent = np.asarray([rescan(image, int(n)) for image, n in zip(clean, sides, strict=True)], dtype=np.float32)
    return clean, gaussian(sent, LIGHT_SIGMA, rng)


def heavier_strokes(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    target = _each(clean, lambda image: ndimage.grey_dilation(image, size=(STROKE_SIZE, STROKE_SIZE)))
    return target, gaussian(target, STROKE_SIGMA, rng)


def lighter_strokes(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    target = _each(clean, lambda image: ndimage.grey_erosion(image, size=(STROKE_SIZE, STROKE_SIZE)))
    return target, gaussian(target, STROKE_SIGMA, rng)


def low_light(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    photons = rng.uniform(*PHOTONS, size=(len(clean), 1, 1))
    return clean, np.clip(rng.poisson(clean * photons) / photons, 0.0, 1.0).astype(np.float32)


def impulse_after_jpeg(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    sent = jpeg_images(clean, rng, IMPULSE_JPEG_QUALITY)
    hit = rng.random(sent.shape) < IMPULSE_AMOUNT
    sent[hit] = (rng.random(int(hit.sum())) < 0.5).astype(np.float32)
    return clean, sent


def shifted_and_turned(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    moves = rng.integers(-MOVE_PX, MOVE_PX + 1, size=(len(clean), 2))
    angles = rng.uniform(-MOVE_DEG, MOVE_DEG, size=len(clean))
    target = np.asarray(
        [
            np.clip(ndimage.rotate(ndimage.shift(image, move, order=0), angle, reshape=False, order=1), 0.0, 1.0)
            for image, move, angle in zip(clean, moves, angles, strict=True)
        ],
        dtype=np.float32,
    )
    return target, gaussian(target, MOVE_SIGMA, rng)


def faded_moderate(clean: np.ndarray, rng: np.random.Generator) -> Pair:
    return clean, fade_images(clean, rng, sigma=FADED_SIGMA)


@dataclass(frozen=True)
class Row:
    label: str
    make: Callable[[np.ndarray, np.random.Generator], Pair]


EXTRA: tuple[Row, ...] = (
    Row(f"defocus blur r {DEFOCUS_RADIUS[0]:g}-{DEFOCUS_RADIUS[1]:g} px, gaussian {LIGHT_SIGMA:g}", defocus),
    Row(f"motion blur {MOTION_LENGTH[0]}-{MOTION_LENGTH[1]} px, gaussian {LIGHT_SIGMA:g}", motion),
    Row(f"streaks {STREAKS[0]}-{STREAKS[1]} lines, gaussian {LIGHT_SIGMA:g}", streaks),
    Row(f"low resolution {LOW_SIDE[0]}-{LOW_SIDE[1]} px, gaussian {LIGHT_SIGMA:g}", low_resolution),
    Row(f"heavier strokes (dilated {STROKE_SIZE} px), gaussian {STROKE_SIGMA:g}", heavier_strokes),
    Row(f"lighter strokes (eroded {STROKE_SIZE} px), gaussian {STROKE_SIGMA:g}", lighter_strokes),
    Row(f"low light {PHOTONS[0]:g}-{PHOTONS[1]:g} photons", low_light),
    Row(
        f"impulse {IMPULSE_AMOUNT:g} after jpeg {IMPULSE_JPEG_QUALITY[0]}-{IMPULSE_JPEG_QUALITY[1]}", impulse_after_jpeg
    ),
    Row(f"shifted {MOVE_PX} px and turned {MOVE_DEG:g} deg, gaussian {MOVE_SIGMA:g}", shifted_and_turned),
    Row(f"faded scans, gaussian {FADED_SIGMA:g}", faded_moderate),
)


def labels() -> list[str]:
    """Every row of the battery, in order."""
    return [c.label for c in CONDITIONS] + [u.label for u in UPLOADS] + [row.label for row in EXTRA]


def evaluation_pairs(clean: np.ndarray, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, target, input) for every row of the evaluation and upload tables (the int8 gate's rows)."""
    rows = [(c.label, clean, noisy_test_set(clean, c, seed)) for c in CONDITIONS]
    return rows + [(u.label, *upload_pair(clean, u, seed)) for u in UPLOADS]


def pairs(clean: np.ndarray, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, target, input) for every row, from clean float32 (n, 28, 28) images in [0, 1]."""
    rows = evaluation_pairs(clean, seed)
    for index, row in enumerate(EXTRA):
        target, sent = row.make(clean.copy(), np.random.default_rng([seed, 40_000 + index]))
        rows.append((row.label, target.astype(np.float32), np.clip(sent, 0.0, 1.0).astype(np.float32)))
    return rows
