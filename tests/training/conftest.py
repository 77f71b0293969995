"""Tiny IDX datasets written by the tests, so nothing depends on downloads or shared data."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from training.data import IDX_FILES


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_dataset(
    directory: Path, n_train: int, n_test: int, seed: int = 0, sums: bool = True, invert: bool = False
) -> Path:
    """Strokes on black (``invert``: on white) with labels 0-9, gzipped, with a SHA256SUMS file beside them."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 4 + label : 24, 10 + label // 2 : 14 + label // 2] = 255
        if invert:
            images = 255 - images
        for kind, array in (("images", images), ("labels", labels)):
            path = directory / f"{IDX_FILES[f'{split}_{kind}']}.gz"
            path.write_bytes(gzip.compress(idx_bytes(array)))
            lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}")
    if sums:
        (directory / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return write_idx_dataset(tmp_path / "data", n_train=60, n_test=20)
