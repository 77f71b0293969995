"""Manifest schema, tensor names and checksum verification for model bundles."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

MANIFEST_FILE = "manifest.json"
#: Optional: clean test images to try the model on, ``samples/index.json`` listing
#: ``[{"file": "00.png", "label": "7"}, ...]`` beside the 28x28 grayscale PNGs.
SAMPLES_INDEX = "samples/index.json"

#: Height, width and channels of every image the models take and return (NHWC).
IMAGE_SHAPE: tuple[int, int, int] = (28, 28, 1)

GraphName = Literal["autoencoder", "encoder", "decoder", "scorer"]
GRAPHS: tuple[GraphName, ...] = ("autoencoder", "encoder", "decoder", "scorer")
GRAPH_FILES: dict[GraphName, str] = {name: f"{name}.onnx" for name in GRAPHS}
#: The optional int8 copy of the autoencoder (see :class:`Int8Spec`).
INT8_AUTOENCODER_FILE = "autoencoder.int8.onnx"

#: Input and output tensor names of each graph, fixed at export.
TENSOR_NAMES: dict[GraphName, tuple[str, str]] = {
    "autoencoder": ("image", "denoised"),
    "encoder": ("image", "latent"),
    "decoder": ("latent", "denoised"),
    "scorer": ("image", "anomaly_score"),
}
#: The scorer's output per image: one float, higher for inputs less like the training data.
SCORE_SHAPE: tuple[int] = (1,)


class BundleError(Exception):
    """A bundle cannot be used; the message names the offending file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    #: ``None`` marks a dynamic dimension (the batch).
    shape: tuple[int | None, ...]
    dtype: Literal["float32"] = "float32"


class GraphSpec(_Strict):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: TensorSpec
    output: TensorSpec

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in {"", ".", ".."}:
            raise ValueError("must be a plain file name inside the bundle folder")
        return value


class AnomalySpec(_Strict):
    """How the ``scorer`` graph's score is read: above ``threshold`` an input is flagged as unlike the training data."""

    method: str
    threshold: float = Field(allow_inf_nan=False)
    #: The share of held-out typical inputs (the validation split, pooled noises) at or below the threshold.
    calibration_quantile: float = Field(gt=0, lt=1)
    #: The share of the test set's noisy images flagged.
    false_flags: float = Field(ge=0, le=1)
    #: Per out-set: ``auroc`` and ``flagged`` (the share flagged at the threshold).
    against: dict[str, dict[str, float]]
    #: How it was measured: the noises pooled, the outlier exposure, set sizes, every method compared.
    details: dict[str, Any] = Field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return self.model_dump(exclude={"details"})


class Int8Spec(_Strict):
    """A static int8 (QDQ) copy of the autoencoder, shipped because on every row of the evaluation table
    its PSNR is within ``gate_db`` of the float32 graph's; the service runs it on CPU unless told not to."""

    graph: GraphSpec
    method: str
    gate_db: float = Field(gt=0)
    #: Per evaluation row: ``float32`` and ``int8`` mean PSNR (dB) on the whole test set, and ``delta``.
    psnr: dict[str, dict[str, float]]

    @field_validator("psnr")
    @classmethod
    def _within_gate(cls, value: dict[str, dict[str, float]], info: ValidationInfo) -> dict[str, dict[str, float]]:
        gate = info.data.get("gate_db")
        if not value or any(not {"float32", "int8"} <= set(row) for row in value.values()):
            raise ValueError("needs every evaluation row's float32 and int8 PSNR")
        worst = abs(_worst_change(value))
        if gate is not None and worst > gate:
            raise ValueError(f"the int8 graph moves PSNR by {worst:.3f} dB, more than its gate of {gate} dB")
        return value

    def summary(self) -> dict[str, Any]:
        """The file, the gate, and the largest PSNR change on any row (signed, dB)."""
        return {
            "file": self.graph.file,
            "method": self.method,
            "gate_db": self.gate_db,
            "worst_psnr_delta_db": _worst_change(self.psnr),
        }


def _worst_change(psnr: dict[str, dict[str, float]]) -> float:
    """The int8 graph's largest PSNR change from float32 on any row (signed, dB)."""
    return max((row["int8"] - row["float32"] for row in psnr.values()), key=abs)


class Manifest(_Strict):
    #: 2: the ``scorer`` graph and ``anomaly`` were added.
    format_version: Literal[2] = 2
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: str
    dataset: str
    description: str = ""
    created_at: str
    image_shape: tuple[int, int, int] = IMAGE_SHAPE
    latent_shape: tuple[int, ...]
    graphs: dict[GraphName, GraphSpec]
    anomaly: AnomalySpec
    #: Optional (absent: float32 only).
    int8: Int8Spec | None = None
    opset: int
    noise: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)

    @field_validator("graphs")
    @classmethod
    def _all_graphs(cls, value: dict[GraphName, GraphSpec]) -> dict[GraphName, GraphSpec]:
        missing = [name for name in GRAPHS if name not in value]
        if missing:
            raise ValueError(f"missing graphs: {', '.join(missing)}")
        for name, spec in value.items():
            expected = TENSOR_NAMES[name]
            if (spec.input.name, spec.output.name) != expected:
                raise ValueError(f"graph {name!r} must map {expected[0]!r} to {expected[1]!r}")
        return value

    @field_validator("int8")
    @classmethod
    def _int8_like_autoencoder(cls, value: Int8Spec | None, info: ValidationInfo) -> Int8Spec | None:
        graphs = info.data.get("graphs")
        if value is not None and graphs is not None and "autoencoder" in graphs:
            float32 = graphs["autoencoder"]
            if (value.graph.input, value.graph.output) != (float32.input, float32.output):
                raise ValueError("the int8 autoencoder's tensors must be the float32 autoencoder's")
        return value

    @model_validator(mode="after")
    def _int8_on_every_row(self) -> Manifest:
        missing = set(self.evaluation.get("denoising", {})) - set(self.int8.psnr) if self.int8 else set()
        if missing:
            raise ValueError(f"the int8 graph was not evaluated on {', '.join(sorted(missing))}")
        return self

    @property
    def latent_size(self) -> int:
        size = 1
        for dim in self.latent_shape:
            size *= dim
        return size

    def summary(self) -> dict[str, Any]:
        """The fields a client needs to choose and call a model."""
        return {
            "name": self.name,
            "version": self.version,
            "dataset": self.dataset,
            "description": self.description,
            "created_at": self.created_at,
            "image_shape": list(self.image_shape),
            "latent_shape": list(self.latent_shape),
            "opset": self.opset,
            "anomaly": self.anomaly.summary(),
            "int8": self.int8.summary() if self.int8 else None,
        }


#: The largest manifest read: a real one is a few tens of kilobytes.
MAX_MANIFEST_BYTES = 1 << 20
#: The largest graph file read (and hashed).
MAX_GRAPH_BYTES = 512 << 20
#: The largest sample index, and sample image, read.
MAX_SAMPLE_BYTES = 1 << 20


def shown(path: Path) -> str:
    """A bundle's file as messages name it: relative to the model folder (``mnist/decoder.onnx``), so that an
    answer does not tell a caller where the service keeps its files."""
    return f"{path.parent.name}/{path.name}"


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (a symlink to one included) of at most ``limit`` bytes;
    :class:`BundleError` naming the file otherwise. Never blocks on a FIFO or reads a device: the file is
    opened non-blocking and checked with ``fstat`` before anything is read, and at most ``limit + 1`` bytes
    are read whatever the file grows to meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise BundleError(f"{shown(path)}: not found" + (" (a dangling symlink)" if path.is_symlink() else "")) from exc
    except OSError as exc:
        raise BundleError(f"{shown(path)}: cannot open: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise BundleError(f"{shown(path)}: not a regular file; a bundle holds regular files (or links to them)")
        if status.st_size > limit:
            raise BundleError(f"{shown(path)}: {status.st_size} bytes, over the limit of {limit}")
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise BundleError(f"{shown(path)}: cannot read: {exc.strerror}") from exc
    if len(data) > limit:
        raise BundleError(f"{shown(path)}: grew past {limit} bytes while being read")
    return data


def file_sha256(path: Path) -> str:
    return hashlib.sha256(read_bounded(path, MAX_GRAPH_BYTES)).hexdigest()


def load_manifest(bundle_dir: Path) -> Manifest:
    """Read and validate ``manifest.json``; raise :class:`BundleError` naming the file."""
    path = bundle_dir / MANIFEST_FILE
    data = read_bounded(path, MAX_MANIFEST_BYTES)
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{shown(path)}: unreadable manifest: {exc}") from exc
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise BundleError(f"{shown(path)}: malformed manifest: {problems}") from exc


def read_graph(bundle_dir: Path, spec: GraphSpec) -> bytes:
    """A graph file's bytes, checked against the SHA-256 in the manifest (read once: what is checked is
    what is loaded)."""
    path = bundle_dir / spec.file
    data = read_bounded(path, MAX_GRAPH_BYTES)
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise BundleError(
            f"{shown(path)}: SHA-256 differs from the manifest's; the file was modified or corrupted: "
            "re-export the bundle"
        )
    return data


def verify_checksums(bundle_dir: Path, manifest: Manifest) -> None:
    """Check every graph file against the SHA-256 in the manifest."""
    for spec in [*manifest.graphs.values(), *([manifest.int8.graph] if manifest.int8 else [])]:
        read_graph(bundle_dir, spec)
