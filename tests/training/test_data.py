"""Reading IDX and .npz datasets, and refusing bad files with a message naming them."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import idx_bytes
from training.data import DATASETS, PROJECT, DataError, download, load_dataset, load_idx_dir, load_npz, read_idx


def test_reads_gzipped_idx_directory(idx_dir: Path) -> None:
    data = load_idx_dir(idx_dir, "tiny")
    assert data.train.images.shape == (60, 28, 28)
    assert data.train.images.dtype == np.uint8
    assert data.train.labels.shape == (60,)
    assert data.test.images.shape == (20, 28, 28)


def test_reads_uncompressed_idx(idx_dir: Path) -> None:
    for path in idx_dir.glob("*.gz"):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    (idx_dir / "SHA256SUMS").unlink()
    assert load_idx_dir(idx_dir).test.labels.shape == (20,)


def test_truncated_file_is_refused(idx_dir: Path) -> None:
    path = idx_dir / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    (idx_dir / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: truncated"):
        load_idx_dir(idx_dir)


def test_wrong_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8)))
    with pytest.raises(DataError, match="wrong magic number"):
        read_idx(path, expect_images=False)


def test_checksum_mismatch_is_refused(idx_dir: Path) -> None:
    path = idx_dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones(60, dtype=np.uint8))))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: SHA-256 mismatch"):
        load_idx_dir(idx_dir)


def test_missing_file_names_path_and_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data directory not found.*dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "absent")


def test_label_count_must_match_images(idx_dir: Path) -> None:
    (idx_dir / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.ones(59, dtype=np.uint8))))
    (idx_dir / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match="60 images but 59 labels"):
        load_idx_dir(idx_dir)


def test_reads_keras_npz_cache(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    np.savez(path, x_train=images, y_train=np.arange(5), x_test=images[:2], y_test=np.arange(2))
    data = load_npz(path)
    assert data.train.images.shape == (5, 28, 28)
    assert data.test.labels.tolist() == [0, 1]


def test_npz_with_wrong_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(DataError, match=r"not a Keras MNIST \.npz cache"):
        load_npz(path)


def test_default_folder_comes_from_the_project_not_the_working_directory(
    idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DENOISE_MNIST_DIR", raising=False)
    assert DATASETS["mnist"].location() == PROJECT.parent / "shared" / "data" / "mnist"
    monkeypatch.setenv("DENOISE_MNIST_DIR", str(idx_dir))
    assert DATASETS["mnist"].location() == idx_dir
    assert load_dataset("mnist").train.images.shape[1:] == (28, 28)


def test_missing_dataset_says_where_files_are_expected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DENOISE_FASHION_MNIST_DIR", str(tmp_path / "nothing"))
    with pytest.raises(DataError) as error:
        load_dataset("fashion-mnist")
    message = str(error.value)
    assert f"expected in {tmp_path / 'nothing'}" in message
    assert "--data-dir or $DENOISE_FASHION_MNIST_DIR" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_download_without_internet_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, target: Path) -> None:
        Path(target).write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(DataError, match=r"cannot download https://\S+train-images-idx3-ubyte.gz: .*name resolution"):
        download("mnist", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file left to be mistaken for data
