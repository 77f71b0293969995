"""Export the four Keras models to ONNX with tf2onnx, check them, and write the bundle."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from denoise_bundle import (
    GRAPH_FILES,
    GRAPHS,
    MANIFEST_FILE,
    SAMPLES_INDEX,
    TENSOR_NAMES,
    AnomalySpec,
    GraphSpec,
    Manifest,
    TensorSpec,
    file_sha256,
)
from denoise_bundle.manifest import GraphName
from training import model_card
from training.model import Autoencoder

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ExportError(Exception):
    """The exported graph is invalid or disagrees with the Keras model."""


def to_onnx(model: keras.Model, input_name: str, output_name: str) -> onnx.ModelProto:
    """Convert a Keras 3 model with an explicit signature and a dynamic batch dimension.

    Keras 3 models are not tf.keras models, so ``from_keras`` cannot trace them;
    ``from_function`` on a ``tf.function`` with an explicit signature does.
    """
    input_shape = (None, *model.input_shape[1:])
    signature = (tf.TensorSpec(input_shape, tf.float32, name=input_name),)

    @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]
    def forward(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {output_name: model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=OPSET)
    _rename_io(proto, input_name, output_name)
    onnx.checker.check_model(proto, full_check=True)
    return cast(onnx.ModelProto, proto)


def _rename_io(proto: onnx.ModelProto, input_name: str, output_name: str) -> None:
    """Give the graph's single input and output their deliberate names everywhere."""
    graph = proto.graph
    renames = {graph.input[0].name: input_name, graph.output[0].name: output_name}
    for value in (*graph.input, *graph.output):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]


def parity(model: keras.Model, proto: onnx.ModelProto, sample: np.ndarray) -> float:
    """Largest absolute difference between Keras and ONNX Runtime on ``sample``."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = model(sample, training=False)
    (actual,) = session.run(None, {session.get_inputs()[0].name: sample})
    return float(np.max(np.abs(np.asarray(expected) - actual)))


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    dims = value.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return TensorSpec(name=value.name, shape=shape)


@dataclass(frozen=True)
class ExportedGraph:
    name: GraphName
    path: Path
    max_abs_diff: float


def write_samples(out_dir: Path, images: np.ndarray, labels: np.ndarray, names: Sequence[str], per_class: int) -> int:
    """The first ``per_class`` test images of every class as PNGs, listed in ``samples/index.json``."""
    from PIL import Image

    folder = out_dir / Path(SAMPLES_INDEX).parent
    folder.mkdir(parents=True, exist_ok=True)
    chosen = [int(i) for c in range(len(names)) for i in np.flatnonzero(labels == c)[:per_class]]
    index = []
    for number, image_index in enumerate(sorted(chosen)):
        file = f"{number:02d}.png"
        Image.fromarray(images[image_index], "L").save(folder / file, optimize=True)
        index.append({"file": file, "label": names[int(labels[image_index])]})
    (out_dir / SAMPLES_INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return len(index)


def export_graph(model: keras.Model, graph: GraphName, out_dir: Path, sample: np.ndarray) -> tuple[GraphSpec, float]:
    """Write one of a bundle's graphs; its spec for the manifest and its largest difference from Keras on
    ``sample``. Fails if that is above :data:`PARITY_TOLERANCE`."""
    input_name, output_name = TENSOR_NAMES[graph]
    proto = to_onnx(model, input_name, output_name)
    diff = parity(model, proto, sample)
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"{graph}: ONNX differs from Keras by {diff:.3g} > {PARITY_TOLERANCE}")
    path = out_dir / GRAPH_FILES[graph]
    onnx.save(proto, path)
    spec = GraphSpec(
        file=path.name,
        sha256=file_sha256(path),
        input=_tensor_spec(proto.graph.input[0]),
        output=_tensor_spec(proto.graph.output[0]),
    )
    return spec, diff


def export_bundle(
    models: Autoencoder,
    scorer: keras.Model,
    out_dir: Path,
    *,
    anomaly: AnomalySpec,
    name: str,
    version: str,
    dataset: str,
    description: str,
    parity_sample: np.ndarray,
    extra: dict[str, Any],
) -> Manifest:
    """Write the four graphs and ``manifest.json``; fail if any graph loses parity."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keras_models: dict[GraphName, keras.Model] = {
        "autoencoder": models.autoencoder,
        "encoder": models.encoder,
        "decoder": models.decoder,
        "scorer": scorer,
    }
    latent_sample = np.asarray(models.encoder(parity_sample, training=False))
    samples = {
        "autoencoder": parity_sample,
        "encoder": parity_sample,
        "decoder": latent_sample,
        "scorer": parity_sample,
    }
    graphs: dict[GraphName, GraphSpec] = {}
    parity_report: dict[str, float] = {}
    for graph in GRAPHS:
        graphs[graph], parity_report[graph] = export_graph(keras_models[graph], graph, out_dir, samples[graph])
    manifest = Manifest(
        name=name,
        version=version,
        dataset=dataset,
        description=description,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        latent_shape=tuple(int(d) for d in models.encoder.output_shape[1:]),
        graphs=graphs,
        anomaly=anomaly,
        opset=OPSET,
        noise=extra.get("noise", {}),
        training=extra.get("training", {}),
        evaluation={**extra.get("evaluation", {}), "onnx_parity_max_abs_diff": parity_report},
        versions=library_versions(),
    )
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(out_dir: Path, manifest: Manifest) -> None:
    """``manifest.json``, and the model card rendered from it."""
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    model_card.write(out_dir)


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }
