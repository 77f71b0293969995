"""The V2 models: every graph of every loaded bundle, and one PNG model per bundle.

Names (URL-safe, as bundle names are):

- ``<bundle>``: PNG bytes in (``BYTES``, one element per image, the same normalisation as
  ``/denoise``), denoised PNG bytes out, with each image's anomaly score.
- ``<bundle>-autoencoder``: float32 images ``[-1, 28, 28, 1]`` in [0, 1] to denoised images
  (and anomaly scores).
- ``<bundle>-encoder``: images to latents (and anomaly scores).
- ``<bundle>-decoder``: latents to images.

The version is the bundle's; the platform ``onnxruntime_onnx``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import clip, unloaded_message
from app.runtime.model import SCORED, LoadedModel, bundle_of
from app.runtime.registry import Registry
from app.v2.tensors import V2Error
from denoise_bundle import SCORE_SHAPE, TENSOR_NAMES
from denoise_bundle.manifest import GraphName

PLATFORM = "onnxruntime_onnx"
PNG_INPUT = "png"
PNG_OUTPUT = "denoised_png"
SCORE_OUTPUT = TENSOR_NAMES["scorer"][1]

GraphKind = Literal["autoencoder", "encoder", "decoder"]
Kind = Literal["png", GraphKind]
GRAPH_KINDS: tuple[GraphKind, ...] = ("autoencoder", "encoder", "decoder")


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    #: ``-1`` for the batch dimension.
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class V2Model:
    name: str
    kind: Kind
    bundle: LoadedModel
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]

    @property
    def version(self) -> str:
        return self.bundle.manifest.version

    @property
    def graph(self) -> GraphName:
        """The batcher a request to this model goes through."""
        return "autoencoder" if self.kind == "png" else self.kind

    def output(self, name: str) -> TensorMeta | None:
        return next((meta for meta in self.outputs if meta.name == name), None)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [meta.metadata() for meta in self.inputs],
            "outputs": [meta.metadata() for meta in self.outputs],
        }

    def config(self, max_batch_size: int) -> dict[str, Any]:
        """Triton's model configuration (``ModelConfig`` as JSON): the per-image dims, the batch left out."""

        def tensors(metas: tuple[TensorMeta, ...]) -> list[dict[str, Any]]:
            return [
                {
                    "name": m.name,
                    "data_type": f"TYPE_{'STRING' if m.datatype == 'BYTES' else m.datatype}",
                    "dims": list(m.shape[1:]) or [1],
                }
                for m in metas
            ]

        return {
            "name": self.name,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": max_batch_size,
            "input": tensors(self.inputs),
            "output": tensors(self.outputs),
            "dynamic_batching": {},
            "parameters": {"bundle": {"string_value": self.bundle.manifest.name}},
        }


def _tensor(name: str, shape: tuple[int, ...]) -> TensorMeta:
    return TensorMeta(name, "FP32", (-1, *shape))


def models_of(bundle: LoadedModel, scored: bool) -> Iterator[V2Model]:
    manifest = bundle.manifest
    shapes = {"image": manifest.image_shape, "latent": manifest.latent_shape, "denoised": manifest.image_shape}
    score = (_tensor(SCORE_OUTPUT, SCORE_SHAPE),)
    yield V2Model(
        manifest.name,
        "png",
        bundle,
        (TensorMeta(PNG_INPUT, "BYTES", (-1,)),),
        (TensorMeta(PNG_OUTPUT, "BYTES", (-1,)), *(score if scored else ())),
    )
    for graph in GRAPH_KINDS:
        inp, out = TENSOR_NAMES[graph]
        extra = score if scored and graph in SCORED else ()
        yield V2Model(
            f"{manifest.name}-{graph}",
            graph,
            bundle,
            (_tensor(inp, shapes[inp]),),
            (_tensor(out, shapes[out]), *extra),
        )


@dataclass
class Catalog:
    """The V2 models of the bundles in service; one instance shared by both V2 front doors, refreshed
    whenever the bundles in service change."""

    models: dict[str, V2Model]

    def refresh(self, registry: Registry) -> None:
        """Follow the registry (one assignment: a request sees the old catalog or the new one)."""
        scored = registry.settings.anomaly_scores
        self.models = {model.name: model for bundle in registry for model in models_of(bundle, scored)}

    def get(self, name: str, version: str | None = None) -> V2Model | None:
        model = self.models.get(name)
        if model is None or (version and version != model.version):
            return None
        return model

    def find(self, name: str, version: str | None = None, unloaded: frozenset[str] = frozenset()) -> V2Model:
        """The model, or a 404 saying why not: its bundle was unloaded on purpose (``unloaded``: how to load it
        back), or no such model (naming the models there are); an empty ``version`` means any."""
        model = self.get(name, version)
        if model is not None:
            return model
        bundle = bundle_of(name)
        if bundle in unloaded:
            raise V2Error(unloaded_message(name, bundle), 404)
        known = ", ".join(sorted(self.models)) or "none"
        what = f"model {clip(name)!r}" + (f" version {clip(version)!r}" if version else "")
        raise V2Error(f"unknown {what}; models: {known}", 404)
