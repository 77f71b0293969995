"""Images like the ones callers send, beyond the training noise: clean images passed through, digits off
centre or rotated under the seeds' noise, faded scans, JPEG artefacts on noise.

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

from training.evaluate import CLASSICAL, Denoiser, bm3d_denoise, gaussian_blur, mean_scores, median3, nl_means
from training.noise import gaussian

#: The seeds' noise, under which shifted and rotated digits are measured (against the centred
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


def clean_pass_through(images: np.ndarray, rng: np.random.Generator) -> Pair:
    return images, images.copy()


def shifted(images: np.ndarray, rng: np.random.Generator) -> Pair:
    """Each digit moved by whole pixels, up to :data:`MAX_SHIFT_PX` each way, then the seeds' noise."""
    moves = rng.integers(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1, size=(len(images), 2))
    target = np.stack(
        [ndimage.shift(image, move, order=0, mode="constant") for image, move in zip(images, moves, strict=True)]
    )
    return target, gaussian(target, SEEDS_SIGMA, rng)


def rotated(images: np.ndarray, rng: np.random.Generator) -> Pair:
    """Each digit turned by up to :data:`MAX_ROTATION_DEG` either way (bilinear), then the seeds' noise."""
    angles = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, size=len(images))
    target = np.stack(
        [
            np.clip(ndimage.rotate(image, angle, reshape=False, order=1, mode="constant"), 0.0, 1.0)
            for image, angle in zip(images, angles, strict=True)
        ]
    ).astype(np.float32)
    return target, gaussian(target, SEEDS_SIGMA, rng)


def faded(images: np.ndarray, rng: np.random.Generator) -> Pair:
    """A faded scan: ``background + contrast * (1 - background) * x`` plus light noise; the target is the
    clean digit, light on black."""
    background = rng.uniform(*FADE_BACKGROUND, size=(len(images), 1, 1)).astype(np.float32)
    contrast = rng.uniform(*FADE_CONTRAST, size=(len(images), 1, 1)).astype(np.float32)
    washed = background + contrast * (1.0 - background) * images
    return images, gaussian(washed, FADE_SIGMA, rng)


def jpeg(images: np.ndarray, rng: np.random.Generator) -> Pair:
    """A noisy scan saved as JPEG at a quality in :data:`JPEG_QUALITY`."""
    noisy = gaussian(images, JPEG_SIGMA, rng)
    qualities = rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, size=len(images))
    out = np.empty_like(noisy)
    for i, (image, quality) in enumerate(zip(noisy, qualities, strict=True)):
        buffer = io.BytesIO()
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(buffer, "JPEG", quality=int(quality))
        out[i] = np.asarray(Image.open(buffer), dtype=np.float32) / 255
    return images, out


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
    methods: dict[str, Denoiser] = {
        "input as sent": lambda x: x,
        "gaussian blur": gaussian_blur,
        "median 3x3": median3,
        "non-local means": nl_means,
        **networks,
    }
    table: dict[str, Any] = {}
    for upload in UPLOADS:
        target, sent = upload_pair(clean, upload, seed)
        row: dict[str, Any] = {name: mean_scores(target, method(sent)) for name, method in methods.items()}
        if bm3d_subset > 0:
            subset = slice(0, min(bm3d_subset, len(clean)))
            row["bm3d"] = mean_scores(target[subset], bm3d_denoise(sent[subset]))
            row["bm3d"]["networks_on_same_images"] = {
                name: mean_scores(target[subset], net(sent[subset])) for name, net in networks.items()
            }
        table[upload.label] = row
        log(f"{upload.label}: " + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in row.items()))
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
