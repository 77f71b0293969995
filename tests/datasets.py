"""Tests that read the real MNIST (or Fashion-MNIST) files: they run where the files are (and always in
CI, which has them), and skip with the reason elsewhere, as on a fresh clone with nothing beside it."""

from __future__ import annotations

import os

import pytest

from training.data import DATASETS


def need_data(*names: str) -> None:
    """Skip the calling test, outside CI, when a dataset's files are not where the pipeline reads them."""
    for name in names:
        dataset = DATASETS[name]
        folder = dataset.location()
        if not folder.is_dir() and not os.environ.get("CI"):
            pytest.skip(f"no {name} files at {folder} (set ${dataset.env}, or see training/README.md)")
