"""Images like the ones callers send, beyond the training noise: clean images passed through, digits off
centre or rotated under Gaussian noise σ 0.5, faded scans, JPEG artefacts on noise.

Each condition turns clean test images into a (target, input) pair: the target is what a perfect
denoiser returns (the shifted or rotated digit itself, light on black, for the geometric ones; the
clean image for the others). The parameters are fixed here, once, so that every model is measured
on the same images: draw them per image from ``numpy.random.Generator([seed, 30_000 + index])``.

Run it on a bundle's ONNX graphs with ``python -m training uploads models/mnist``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from training.artefacts import artefacts
from training.evaluate import CLASSICAL, Denoiser, row_summary, scores_row
from training.noise import BlindNoise, gaussian

#: Gaussian noise σ 0.5, under which shifted and rotated digits are measured (against the centred
#: ``gaussian 0.5`` row of the evaluation table).
SEEDS_SIGMA = 0.5
MAX_SHIFT_PX = 4
MAX_ROTATION_DEG = 20.0
#: Faded scans: a background lifted up to mid-grey, the ink's contrast down to 40%, light noise.
FADE_BACKGROUND = (0.0, 0.5)
FADE_CONTRAST = (0.4, 1.0)
FADE_SIGMA = 0.05
#: JPEG-compressed noisy scans.
JPEG_QUALITY = (20, 40)
JPEG_SIGMA = 0.2

Pair = tuple[np.ndarray, np.ndarray]


def shift_images(images: np.ndarray, rng: np.random.Generator, max_px: int = MAX_SHIFT_PX) -> np.ndarray:
    """Each image moved by whole pixels, up to ``max_px`` each way (zeros come in)."""
    moves = rng.integers(-max_px, max_px + 1, size=(len(images), 2))
    moved = [ndimage.shift(image, move, order=0, mode="constant") for image, move in zip(images, moves, strict=True)]
    return np.asarray(moved, dtype=np.float32).reshape(images.shape)


def rotate_images(images: np.ndarray, rng: np.random.Generator, max_deg: float = MAX_ROTATION_DEG) -> np.ndarray:
    """Each image turned by up to ``max_deg`` either way about its centre (bilinear)."""
    angles = rng.uniform(-max_deg, max_deg, size=len(images))
    turned = [
        ndimage.rotate(image, angle, reshape=False, order=1, mode="constant")
        for image, angle in zip(images, angles, strict=True)
    ]
    return np.asarray(np.clip(np.asarray(turned).reshape(images.shape), 0.0, 1.0), dtype=np.float32)


def fade_images(
    images: np.ndarray,
    rng: np.random.Generator,
    background: tuple[float, float] = FADE_BACKGROUND,
    contrast: tuple[float, float] = FADE_CONTRAST,
    sigma: float = FADE_SIGMA,
) -> np.ndarray:
    """A faded scan of each image: ``background + contrast * (1 - background) * x``, then light noise."""
    lifted = rng.uniform(*background, size=(len(images), 1, 1)).astype(np.float32)
    kept = rng.uniform(*contrast, size=(len(images), 1, 1)).astype(np.float32)
    return np.asarray(gaussian(lifted + kept * (1.0 - lifted) * images, sigma, rng), dtype=np.float32)


def jpeg_images(images: np.ndarray, rng: np.random.Generator, quality: tuple[int, int] = JPEG_QUALITY) -> np.ndarray:
    """Each image saved as JPEG at a quality drawn from ``quality`` (inclusive) and decoded again."""
    qualities = rng.integers(quality[0], quality[1] + 1, size=len(images))
    out = np.empty_like(images)
    for i, (image, level) in enumerate(zip(images, qualities, strict=True)):
        buffer = io.BytesIO()
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(buffer, "JPEG", quality=int(level))
        out[i] = np.asarray(Image.open(buffer), dtype=np.float32) / 255
    return out


def clean_pass_through(images: np.ndarray, rng: np.random.Generator) -> Pair:
    return images, images.copy()


def shifted(images: np.ndarray, rng: np.random.Generator) -> Pair:
    """Each digit moved by up to :data:`MAX_SHIFT_PX` each way, then Gaussian noise σ 0.5."""
    target = shift_images(images, rng)
    return target, gaussian(target, SEEDS_SIGMA, rng)


def rotated(images: np.ndarray, rng: np.random.Generator) -> Pair:
    """Each digit turned by up to :data:`MAX_ROTATION_DEG` either way, then Gaussian noise σ 0.5."""
    target = rotate_images(images, rng)
    return target, gaussian(target, SEEDS_SIGMA, rng)


def faded(images: np.ndarray, rng: np.random.Generator) -> Pair:
    """A faded scan; the target is the clean digit, light on black."""
    return images, fade_images(images, rng)


def jpeg(images: np.ndarray, rng: np.random.Generator) -> Pair:
    """A noisy scan saved as JPEG at a quality in :data:`JPEG_QUALITY`."""
    return images, jpeg_images(gaussian(images, JPEG_SIGMA, rng), rng)


@dataclass(frozen=True)
class Upload:
    label: str
    make: Callable[[np.ndarray, np.random.Generator], Pair]


UPLOADS: tuple[Upload, ...] = (
    Upload("clean pass-through", clean_pass_through),
    Upload(f"shifted up to {MAX_SHIFT_PX} px, gaussian {SEEDS_SIGMA:g}", shifted),
    Upload(f"rotated up to {MAX_ROTATION_DEG:g} deg, gaussian {SEEDS_SIGMA:g}", rotated),
    Upload(f"faded to {FADE_BACKGROUND[1]:g} grey, {FADE_CONTRAST[0]:g} contrast, gaussian {FADE_SIGMA:g}", faded),
    Upload(f"jpeg quality {JPEG_QUALITY[0]}-{JPEG_QUALITY[1]}, gaussian {JPEG_SIGMA:g}", jpeg),
)


def upload_pair(clean: np.ndarray, upload: Upload, seed: int) -> Pair:
    """The condition's (target, input) for ``clean`` (float32 (n, 28, 28) in [0, 1]), the same for every model."""
    return upload.make(clean, np.random.default_rng([seed, 30_000 + UPLOADS.index(upload)]))


def uploads_table(
    clean: np.ndarray,
    networks: dict[str, Denoiser],
    *,
    seed: int,
    bm3d_subset: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score the input as it came, the classical denoisers and ``networks`` on every upload condition, as
    :func:`training.evaluate.denoising_table` does on the noise conditions."""
    table: dict[str, Any] = {}
    for upload in UPLOADS:
        target, sent = upload_pair(clean, upload, seed)
        table[upload.label] = scores_row(target, sent, networks, as_sent="input as sent", bm3d_subset=bm3d_subset)
        log(row_summary(upload.label, table[upload.label]))
    return table


def markdown(table: dict[str, Any], networks: list[str]) -> str:
    """PSNR (dB) / SSIM per condition and method; BM3D on its subset, with the networks on the same images."""
    methods = ["input as sent", *[m for m in CLASSICAL if m != "bm3d"], *networks]
    has_bm3d = any("bm3d" in row for row in table.values())
    header = [
        "condition",
        *methods,
        *(["bm3d (subset)", *(f"{n} (same subset)" for n in networks)] if has_bm3d else []),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.items():
        cells = [f"{row[m]['psnr']:.2f} / {row[m]['ssim']:.3f}" for m in methods]
        if has_bm3d:
            cells.append(f"{row['bm3d']['psnr']:.2f}")
            cells += [f"{row['bm3d']['networks_on_same_images'][n]['psnr']:.2f}" for n in networks]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class UploadMix:
    """Training's share of images like callers send, beside the blind noise, fresh every epoch.

    ``moved``: shifted (up to :data:`MAX_SHIFT_PX`) or rotated (up to :data:`MAX_ROTATION_DEG`), half
    each, before the blind noise; the target moves with it. Then ``clean`` of the images go in
    untouched (the target is the input), ``faded`` as faded scans of their target (background up to
    ``FADE_BACKGROUND``'s top, contrast down to ``FADE_CONTRAST``'s bottom, noise up to
    ``fade_sigma``), ``jpeg`` as JPEGs (quality in ``jpeg_quality``) of their noisy input, ``artefacts``
    with scan artefacts (:func:`training.artefacts.artefacts`: blurs, rescans, lines, dust, lighting,
    banding, tone) under light noise instead of the blind noise; the rest keep the blind noise.
    """

    moved: float = 0.2
    clean: float = 0.12
    faded: float = 0.03
    jpeg: float = 0.03
    fade_sigma: float = 0.1
    jpeg_quality: tuple[int, int] = (10, 60)
    artefacts: float = 0.0

    def apply(self, batch: np.ndarray, rng: np.random.Generator, noise: BlindNoise) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) for a clean (n, 28, 28, 1) batch, ``noise`` the blind noise."""
        target = batch[..., 0].copy()
        moved = np.flatnonzero(rng.random(len(target)) < self.moved)
        turned = rng.random(len(moved)) < 0.5
        if len(moved):
            target[moved[~turned]] = shift_images(target[moved[~turned]], rng)
            target[moved[turned]] = rotate_images(target[moved[turned]], rng)
        inputs = noise.apply(target, rng)
        draw = rng.random(len(target))
        clean = draw < self.clean
        faded_ = (draw >= self.clean) & (draw < self.clean + self.faded)
        jpeg_ = (draw >= self.clean + self.faded) & (draw < self.clean + self.faded + self.jpeg)
        scanned = (draw >= self.clean + self.faded + self.jpeg) & (
            draw < self.clean + self.faded + self.jpeg + self.artefacts
        )
        inputs[clean] = target[clean]
        if scanned.any():
            inputs[scanned] = artefacts(target[scanned], rng)
        if faded_.any():
            inputs[faded_] = fade_images(target[faded_], rng, sigma=float(rng.uniform(0.0, self.fade_sigma)))
        if jpeg_.any():
            inputs[jpeg_] = jpeg_images(inputs[jpeg_], rng, self.jpeg_quality)
        return inputs[..., np.newaxis], target[..., np.newaxis]
