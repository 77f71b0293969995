"""Read MNIST-like datasets from local files: IDX (gzipped or not) or Keras' ``.npz`` cache."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
#: The project's root: defaults are resolved from it, not from the current directory.
PROJECT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    #: Where the files are looked for when neither ``--data-dir`` nor :attr:`env` says otherwise.
    default_dir: Path
    where_to_get: str
    download_url: str | None
    #: Names of the labels 0..9, for figures.
    class_names: tuple[str, ...] = tuple(str(digit) for digit in range(10))

    @property
    def env(self) -> str:
        """The environment variable that names this dataset's folder (``DENOISE_MNIST_DIR``)."""
        return f"DENOISE_{self.name.upper().replace('-', '_')}_DIR"

    def location(self) -> Path:
        configured = os.environ.get(self.env)
        return Path(configured) if configured else self.default_dir


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        default_dir=PROJECT.parent / "shared" / "data" / "mnist",
        where_to_get="the four MNIST IDX files (*-idx3-ubyte.gz, *-idx1-ubyte.gz); "
        "`python -m training download mnist --data-dir DIR` fetches them where there is internet",
        download_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        default_dir=Path("/usr/share/datasets/fashion-mnist"),
        where_to_get="`apt-get install dataset-fashion-mnist` (Debian) puts the IDX files in "
        "/usr/share/datasets/fashion-mnist/",
        download_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}


class DataError(Exception):
    """A dataset file is missing or corrupt; the message names the path and the remedy."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) uint8


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / stem}[.gz]: file not found")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def read_idx(path: Path, *, expect_images: bool) -> np.ndarray:
    """Parse one IDX file, checking the magic number, the dimensions and the length."""
    data = _read_bytes(path)
    magic_expected = _IMAGES_MAGIC if expect_images else _LABELS_MAGIC
    ndim = 3 if expect_images else 1
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != magic_expected:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{magic_expected:08x}")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    if expect_images and dims[1:] != (28, 28):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    expected_len = header_size + int(np.prod(dims))
    if len(data) != expected_len:
        raise DataError(f"{path}: truncated or padded: {len(data)} bytes, header promises {expected_len}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def _read_sha256sums(directory: Path) -> dict[str, str]:
    sums_file = directory / "SHA256SUMS"
    if not sums_file.is_file():
        return {}
    sums: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _check_sha256(path: Path, sums: dict[str, str]) -> None:
    expected = sums.get(path.name)
    if expected is None:
        return
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: SHA-256 mismatch with SHA256SUMS (expected {expected}, got {actual})")


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 (n, 28, 28, 1) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


#: Pixel values (of 255) counted as background, and the share of them below which images do not look
#: MNIST-like (light shapes on black: MNIST has about 80%, Fashion-MNIST about 50%).
BACKGROUND_LEVEL = 25
MIN_BACKGROUND_SHARE = 0.3


def check_images(images: np.ndarray, what: str) -> list[str]:
    """Warnings, with figures, for training images that do not look like MNIST-like data (random values, dark
    on light); :class:`DataError` for images nothing can be learned from (none, or every pixel the same)."""
    if images.size == 0:
        raise DataError(f"{what}: no images")
    low, high = int(images.min()), int(images.max())
    if low == high:
        raise DataError(f"{what}: every pixel of the {len(images)} images is {low}: nothing to learn from")
    warnings = []
    background = float(np.mean(images <= BACKGROUND_LEVEL))
    if background < MIN_BACKGROUND_SHARE:
        warnings.append(
            f"{what}: only {background:.0%} of pixels are dark background (MNIST has about 80%, Fashion-MNIST about "
            f"50%); random values, or dark shapes on light? (invert such images before training)"
        )
    flat = float(np.mean(images.reshape(len(images), -1).std(axis=1) == 0))
    if flat > 0.01:
        warnings.append(f"{what}: {flat:.1%} of the images hold a single value (blank images)")
    return warnings


def load_idx_dir(directory: Path, name: str = "custom") -> Dataset:
    if not directory.is_dir():
        raise DataError(f"{directory}: data directory not found")
    sums = _read_sha256sums(directory)
    arrays: dict[str, np.ndarray] = {}
    for key, stem in IDX_FILES.items():
        path = _find(directory, stem)
        _check_sha256(path, sums)
        arrays[key] = read_idx(path, expect_images=key.endswith("images"))
    dataset = Dataset(
        name=name,
        train=Split(arrays["train_images"], arrays["train_labels"]),
        test=Split(arrays["test_images"], arrays["test_labels"]),
    )
    _check_pairs(dataset, directory)
    return dataset


def load_npz(path: Path, name: str = "custom") -> Dataset:
    """Read Keras' ``mnist.npz`` cache format (x_train, y_train, x_test, y_test)."""
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a Keras MNIST .npz cache: {exc}") from exc
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3 or arrays[key].shape[1:] != (28, 28) or arrays[key].dtype != np.uint8:
            raise DataError(f"{path}: {key} must be uint8 (n, 28, 28), got {arrays[key].dtype} {arrays[key].shape}")
    dataset = Dataset(
        name=name,
        train=Split(arrays["x_train"], arrays["y_train"].astype(np.uint8)),
        test=Split(arrays["x_test"], arrays["y_test"].astype(np.uint8)),
    )
    _check_pairs(dataset, path)
    return dataset


def _check_pairs(dataset: Dataset, where: Path) -> None:
    for split_name in ("train", "test"):
        split: Split = getattr(dataset, split_name)
        if len(split.images) != len(split.labels):
            raise DataError(f"{where}: {split_name} has {len(split.images)} images but {len(split.labels)} labels")


def class_names(name: str) -> tuple[str, ...]:
    info = DATASETS.get(name)
    return info.class_names if info else DatasetInfo.class_names


def load_dataset(name: str, data_dir: Path | None = None) -> Dataset:
    """Load a named dataset (``mnist``, ``fashion-mnist``) or any directory / ``.npz`` file."""
    info = DATASETS.get(name)
    location = data_dir or (info.location() if info else None)
    if location is None:
        raise DataError(f"unknown dataset {name!r} and no --data-dir given; known: {', '.join(DATASETS)}")
    try:
        if location.suffix == ".npz":
            return load_npz(location, name)
        return load_idx_dir(location, name)
    except DataError as exc:
        hint = ""
        if info is not None:
            hint = (
                f"; the {name} files are expected in {location} (set another folder with --data-dir or "
                f"${info.env}); get the data: {info.where_to_get}"
            )
        raise DataError(f"{exc}{hint}") from exc


def download(name: str, directory: Path) -> list[Path]:
    """Fetch the IDX files of a known dataset (needs internet; nothing else depends on it)."""
    info = DATASETS[name]
    if info.download_url is None:
        raise DataError(f"no download address known for {name}")
    directory.mkdir(parents=True, exist_ok=True)
    fetched = []
    for stem in IDX_FILES.values():
        target = directory / f"{stem}.gz"
        if not target.exists():
            address = info.download_url + target.name
            partial = target.with_suffix(".gz.part")
            try:
                urllib.request.urlretrieve(address, partial)  # noqa: S310
            except (urllib.error.URLError, OSError) as exc:
                partial.unlink(missing_ok=True)
                reason = getattr(exc, "reason", exc)
                raise DataError(
                    f"cannot download {address}: {reason}; without internet, copy the four IDX files "
                    f"into {directory} yourself"
                ) from exc
            partial.rename(target)
        fetched.append(target)
    return fetched
