"""The model bundle format, shared by the training pipeline and the service.

A bundle is one folder holding ``manifest.json`` and three ONNX graphs
(``autoencoder``, ``encoder``, ``decoder``). This package is the single
definition of that layout; it depends only on pydantic so that both the
TensorFlow-heavy ``training`` package and the lean ``app`` can import it.
"""

from denoise_bundle.manifest import (
    GRAPH_FILES,
    GRAPHS,
    IMAGE_SHAPE,
    MANIFEST_FILE,
    SAMPLES_INDEX,
    TENSOR_NAMES,
    BundleError,
    GraphSpec,
    Manifest,
    TensorSpec,
    file_sha256,
    load_manifest,
    verify_checksums,
)

__all__ = [
    "GRAPHS",
    "GRAPH_FILES",
    "IMAGE_SHAPE",
    "MANIFEST_FILE",
    "SAMPLES_INDEX",
    "TENSOR_NAMES",
    "BundleError",
    "GraphSpec",
    "Manifest",
    "TensorSpec",
    "file_sha256",
    "load_manifest",
    "verify_checksums",
]
