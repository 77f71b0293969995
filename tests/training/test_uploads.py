"""The upload conditions (training/uploads.py): what each does to an image, fixed and seeded; the table
they make; and the command that scores a committed bundle on them."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from tests.datasets import need_data
from tests.docs import blocks
from tests.server import REPO
from training import uploads
from training.uploads import UPLOADS, upload_pair, uploads_table


def _digits(n: int = 12) -> np.ndarray:
    rng = np.random.default_rng(7)
    images = np.zeros((n, 28, 28), dtype=np.float32)
    for i in range(n):
        top, left = rng.integers(6, 12, size=2)
        images[i, top : top + 12, left : left + 4] = 1.0
        images[i, top, left : left + 8] = 0.8
    return images


@pytest.mark.parametrize("upload", UPLOADS, ids=lambda u: u.label)
def test_every_condition_is_seeded_and_in_range(upload: uploads.Upload) -> None:
    clean = _digits()
    target, sent = upload_pair(clean, upload, seed=3)
    again_target, again_sent = upload_pair(clean, upload, seed=3)
    assert target.shape == sent.shape == clean.shape
    assert target.dtype == sent.dtype == np.float32
    assert sent.min() >= 0.0
    assert sent.max() <= 1.0
    assert np.array_equal(target, again_target)
    assert np.array_equal(sent, again_sent)
    if upload.make is not uploads.clean_pass_through:
        assert not np.array_equal(upload_pair(clean, upload, seed=4)[1], sent)


def test_clean_pass_through_sends_the_clean_image() -> None:
    clean = _digits()
    target, sent = upload_pair(clean, UPLOADS[0], seed=0)
    assert np.array_equal(target, clean)
    assert np.array_equal(sent, clean)


def test_shifted_targets_are_the_digits_moved_by_at_most_four_pixels() -> None:
    clean = _digits()
    target, _ = uploads.shifted(clean, np.random.default_rng(0))
    for image, moved in zip(clean, target, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if np.array_equal(ndimage.shift(image, (dy, dx), order=0, mode="constant"), moved)
        ]
        assert matches


def test_rotated_targets_keep_the_ink() -> None:
    clean = _digits()
    target, _ = uploads.rotated(clean, np.random.default_rng(0))
    assert np.allclose(target.sum(axis=(1, 2)), clean.sum(axis=(1, 2)), rtol=0.15)


def test_faded_scans_lift_the_background_and_lower_the_contrast() -> None:
    clean = _digits()
    target, sent = uploads.faded(clean, np.random.default_rng(0))
    assert np.array_equal(target, clean)
    background = np.nanmedian(np.where(clean == 0, sent, np.nan).reshape(len(clean), -1), axis=1)
    ink = np.nanmedian(np.where(clean == 1, sent, np.nan).reshape(len(clean), -1), axis=1)
    assert (background <= 0.5 + 0.05).all()
    assert background.max() > 0.1  # some are lifted
    assert ((ink - background) >= 0.4 * (1 - background) - 0.1).all()


def test_jpeg_inputs_are_decoded_jpegs_of_noisy_images() -> None:
    clean = _digits()
    target, sent = uploads.jpeg(clean, np.random.default_rng(0))
    assert np.array_equal(target, clean)
    assert np.allclose(sent * 255, np.round(sent * 255), atol=1e-4)  # 8-bit pixels, as decoded


def test_table_scores_every_method_on_every_condition() -> None:
    clean = _digits(6)
    table = uploads_table(clean, {"identity": lambda x: x}, seed=0, bm3d_subset=0, log=lambda line: None)
    assert list(table) == [upload.label for upload in UPLOADS]
    for row in table.values():
        assert set(row) == {"input as sent", "gaussian blur", "median 3x3", "non-local means", "identity"}
        assert row["identity"] == row["input as sent"]
    text = uploads.markdown(table, ["identity"])
    assert text.count("\n") == 2 + len(UPLOADS)


@pytest.mark.slow
def test_uploads_command_as_the_training_readme_gives_it() -> None:
    """training/README.md's ``uploads`` line, with fewer test images (its last flags win)."""
    need_data("mnist")
    (line,) = [line for block in blocks("training/README.md") for line in block.splitlines() if " uploads " in line]
    command = shlex.split(line.split("#", 1)[0])
    result = subprocess.run(
        [sys.executable, *command[1:], "--limit-test", "12", "--bm3d-subset", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "12 test images of mnist" in result.stdout
    for upload in UPLOADS:
        assert f"| {upload.label} |" in result.stdout
    version = json.loads((REPO / "models" / "mnist" / "manifest.json").read_text())["version"]
    assert f"mnist {version} float32" in result.stdout
    assert f"mnist {version} int8" in result.stdout


def test_moving_no_image_returns_no_image() -> None:
    none = np.zeros((0, 28, 28), dtype=np.float32)
    rng = np.random.default_rng(0)
    assert uploads.shift_images(none, rng).shape == (0, 28, 28)
    assert uploads.rotate_images(none, rng).shape == (0, 28, 28)


@pytest.mark.parametrize("moved", [0.0, 0.02, 0.5, 1.0])
def test_the_mix_gives_every_share_its_images_whatever_the_draw(moved: float) -> None:
    """Small shares leave a batch with no image to shift or to rotate now and then; that is not an error."""
    from training.noise import BlindNoise

    mix = uploads.UploadMix(moved=moved, clean=0.3, faded=0.1, jpeg=0.1)
    clean = _digits(16)[..., np.newaxis]
    for seed in range(20):
        inputs, targets = mix.apply(clean, np.random.default_rng(seed), BlindNoise())
        assert inputs.shape == targets.shape == clean.shape
        assert inputs.dtype == targets.dtype == np.float32
        assert inputs.min() >= 0.0
        assert inputs.max() <= 1.0
    unmoved = uploads.UploadMix(moved=0.0, clean=1.0, faded=0.0, jpeg=0.0)
    inputs, targets = unmoved.apply(clean, np.random.default_rng(1), BlindNoise())
    assert np.array_equal(inputs, clean)  # all clean pass-through, unmoved
    assert np.array_equal(targets, clean)
