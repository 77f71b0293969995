"""The model bundle format, shared by the training pipeline and the service.

A bundle is one folder holding ``manifest.json`` and four ONNX graphs
(``autoencoder``, ``encoder``, ``decoder``, and ``scorer``: the anomaly score), and optionally
an int8 copy of the autoencoder. This package is the single
definition of that layout; it depends only on pydantic so that both the
TensorFlow-heavy ``training`` package and the lean ``app`` can import it.
"""

from denoise_bundle.manifest import (
    GRAPH_FILES,
    GRAPHS,
    IMAGE_SHAPE,
    INT8_AUTOENCODER_FILE,
    MANIFEST_FILE,
    MAX_SAMPLE_BYTES,
    SAMPLES_INDEX,
    SCORE_SHAPE,
    TENSOR_NAMES,
    AnomalySpec,
    BundleError,
    GraphSpec,
    Int8Spec,
    Manifest,
    TensorSpec,
    file_sha256,
    load_manifest,
    read_bounded,
    read_graph,
    shown,
    verify_checksums,
)

__all__ = [
    "GRAPHS",
    "GRAPH_FILES",
    "IMAGE_SHAPE",
    "INT8_AUTOENCODER_FILE",
    "MANIFEST_FILE",
    "MAX_SAMPLE_BYTES",
    "SAMPLES_INDEX",
    "SCORE_SHAPE",
    "TENSOR_NAMES",
    "AnomalySpec",
    "BundleError",
    "GraphSpec",
    "Int8Spec",
    "Manifest",
    "TensorSpec",
    "file_sha256",
    "load_manifest",
    "read_bounded",
    "read_graph",
    "shown",
    "verify_checksums",
]
