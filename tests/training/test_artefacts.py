"""Scan artefacts for training: each kind changes the image, every image stays in range, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from training import artefacts
from training.noise import BlindNoise
from training.uploads import UploadMix


def _digits(count: int = 16) -> np.ndarray:
    images = np.zeros((count, 28, 28), dtype=np.float32)
    images[:, 6:22, 12:16] = 1.0
    images[:, 6:9, 8:20] = 0.9
    return images


@pytest.mark.parametrize("kind", artefacts.KINDS, ids=lambda kind: kind.__name__)
def test_each_kind_changes_the_image_and_keeps_it_in_range(kind: artefacts.Artefact) -> None:
    rng = np.random.default_rng(3)
    for image in _digits(8):
        out = kind(image, rng)
        assert out.shape == (28, 28)
        assert out.dtype == np.float32
        assert out.min() >= 0.0
        assert out.max() <= 1.0
        assert np.abs(out - image).mean() > 1e-3


def test_artefacts_are_seeded_and_leave_the_clean_images_alone() -> None:
    clean = _digits()
    kept = clean.copy()
    first = artefacts.artefacts(clean, np.random.default_rng(5))
    assert np.array_equal(first, artefacts.artefacts(clean, np.random.default_rng(5)))
    assert np.array_equal(clean, kept)
    assert not np.array_equal(first, artefacts.artefacts(clean, np.random.default_rng(6)))


def test_the_mix_gives_its_share_artefacts_and_keeps_the_clean_target() -> None:
    batch = _digits(2000)[..., np.newaxis]
    mix = UploadMix(moved=0.0, clean=0.0, faded=0.0, jpeg=0.0, artefacts=0.5)
    inputs, targets = mix.apply(batch, np.random.default_rng(1), BlindNoise(weights=(1, 0, 0, 0, 0)))
    assert np.array_equal(targets, batch)
    # Artefact images keep a black background far more often than Gaussian noise up to 0.8 leaves it.
    background = inputs[:, :4, :4, 0].reshape(len(inputs), -1)
    share = np.mean(np.abs(background - 0).mean(axis=1) < 0.12)
    assert 0.3 < share < 0.7
    none = UploadMix(moved=0.0, clean=0.0, faded=0.0, jpeg=0.0)
    plain, _ = none.apply(batch, np.random.default_rng(1), BlindNoise(weights=(1, 0, 0, 0, 0)))
    assert np.mean(np.abs(plain[:, :4, :4, 0].reshape(len(plain), -1)).mean(axis=1) < 0.12) < share
