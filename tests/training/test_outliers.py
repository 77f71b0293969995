"""The anomaly score's out-sets: drawn like MNIST, reproducible; the fonts the score is judged on split
from those it trains against; its typical images as callers send them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from training import outliers
from training.anomaly import POOLED_CONDITIONS, in_distribution, pooled_noise, rates


def test_letters_are_fitted_and_centred_like_mnist() -> None:
    fonts = outliers.fonts()
    if not fonts:
        pytest.skip("no fonts on this machine")
    images = outliers.letters(fonts[:1], seed=0, variants=1)
    assert images.shape == (len(outliers.LETTERS), 28, 28)
    assert images.dtype == np.uint8
    for image in images:
        rows, cols = np.nonzero(image)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) <= 21  # the 20x20 box, antialiased
        cy, cx = ndimage.center_of_mass(image.astype(np.float64))
        assert abs(cy - 14) < 1.5
        assert abs(cx - 14) < 1.5


def test_training_glyphs_hold_no_latin_letter_or_look_alike() -> None:
    assert not set(outliers.GLYPHS) & set(outliers.LETTERS)
    latin_look_alikes = set("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοικνυ")
    assert not set(outliers.GLYPHS) & latin_look_alikes


def test_strokes_are_seeded_and_in_range() -> None:
    a, b, c = outliers.strokes(8, seed=1), outliers.strokes(8, seed=1), outliers.strokes(8, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert all(image.max() > 100 for image in a)  # something is drawn in each


def test_inverted_is_dark_on_light() -> None:
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    assert outliers.inverted(image).min() == 255


def test_pooled_noise_uses_every_condition_in_equal_shares() -> None:
    clean = np.full((len(POOLED_CONDITIONS) * 4, 28, 28), 0.5, dtype=np.float32)
    noisy = pooled_noise(clean, seed=3)
    assert noisy.shape == clean.shape
    unchanged = [np.array_equal(n, c) for n, c in zip(noisy, clean, strict=True)]
    assert sum(unchanged) == 4  # only Gaussian sigma 0 leaves an image as it is
    assert np.array_equal(noisy, pooled_noise(clean, seed=3))


def test_rates_auroc_and_flags() -> None:
    typical, odd = np.array([0.0, 0.1, 0.2]), np.array([0.5, 0.6])
    assert rates(typical, odd, threshold=0.3) == {"auroc": 1.0, "flagged": 1.0}
    assert rates(typical, np.array([0.05]), threshold=0.3)["flagged"] == 0.0


def test_held_out_fonts_are_whole_serif_and_monospaced_families() -> None:
    names = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "LiberationMono-Italic.ttf", "Foo-Bold.otf"]
    from pathlib import Path

    trained, held_out = outliers.split_fonts([Path(name) for name in names])
    assert [p.name for p in held_out] == ["DejaVuSerif.ttf", "LiberationMono-Italic.ttf"]
    assert [p.name for p in trained] == ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "Foo-Bold.otf"]


def test_varied_letters_differ_in_size_and_position() -> None:
    fonts = outliers.fonts()
    if not fonts:
        pytest.skip("no fonts on this machine")
    plain = outliers.letters(fonts[:1], seed=0, variants=1)
    varied = outliers.letters(fonts[:1], seed=0, variants=1, varied=True)
    assert varied.shape == plain.shape
    centres = np.array([ndimage.center_of_mass(image.astype(np.float64)) for image in varied])
    assert np.abs(centres - 14).max() > 2  # some are off centre
    extents = [max(np.ptp(np.nonzero(image)[0]), np.ptp(np.nonzero(image)[1])) for image in varied]
    assert min(extents) < 18  # some are smaller than MNIST's 20x20 box


def test_typical_images_include_moved_and_faded_digits() -> None:
    clean = np.zeros((20, 28, 28), dtype=np.float32)
    clean[:, 8:20, 12:16] = 1.0
    kinds = in_distribution(clean, seed=1)
    assert list(kinds) == ["pooled noise", "shifted", "rotated", "faded"]
    assert all(images.shape == clean.shape for images in kinds.values())


def test_photographs_are_seeded_grey_crops_and_the_lfw_patches() -> None:
    a, b, c = outliers.photographs(30, seed=1), outliers.photographs(30, seed=1), outliers.photographs(30, seed=2)
    assert a.shape == (30 + 200, 28, 28)  # the crops, then scikit-image's 200 LFW patches
    assert a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a[:30], c[:30])
    assert np.array_equal(a[30:], c[30:])
    assert all(image.std() > 1 for image in a[: len(outliers.PHOTOGRAPHS)])  # each picture shows something


def test_blanks_are_black_flat_grey_or_random_noise() -> None:
    images = outliers.blanks(9, seed=4)
    assert images.shape == (9, 28, 28)
    assert images.dtype == np.uint8
    black, grey, noise = images[0::3], images[1::3], images[2::3]
    assert (black == 0).all()
    assert all(image.min() == image.max() > 0 for image in grey)
    assert all(image.std() > 50 for image in noise)  # uniform over 0-255: std about 74
    assert np.array_equal(images, outliers.blanks(9, seed=4))
