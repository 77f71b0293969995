"""A model bundle in service: its ONNX Runtime sessions, one batcher per served graph, its sample images,
and the anomaly score that rides along with the graphs that read images."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import onnxruntime as ort

from app.runtime.batcher import ALWAYS, Batcher, Outputs, Until
from denoise_bundle import (
    Manifest,
)
from denoise_bundle.manifest import GraphName


class Observer(Protocol):
    """What the runtime reports as it runs (:class:`app.metrics.Metrics` records it)."""

    def observe_batch(self, model: str, graph: str, size: int) -> None:
        """One ONNX Runtime call of ``size`` images."""

    def observe_scores(self, model: str, scores: np.ndarray, flagged: int) -> None:
        """Anomaly scores of a request's image inputs, ``flagged`` of them above the threshold."""


class _Unobserved:
    def observe_batch(self, model: str, graph: str, size: int) -> None:
        pass

    def observe_scores(self, model: str, scores: np.ndarray, flagged: int) -> None:
        pass


#: The graphs requests run, each behind its own batcher. Those that read images run the anomaly
#: scorer on the same images in the same call (the scorer has no batcher of its own).
SERVED: tuple[GraphName, ...] = ("autoencoder", "encoder", "decoder")


def bundle_of(name: str) -> str:
    """The bundle a V2 model name belongs to: ``mnist`` for ``mnist`` and ``mnist-encoder`` alike."""
    for graph in SERVED:
        base = name.removesuffix(f"-{graph}")
        if base != name:
            return base
    return name


SCORED: frozenset[GraphName] = frozenset({"autoencoder", "encoder"})


#: A bundle folder as found on disk: where it resolves to (a symlink followed), and each file's name,
#: size, modification time and inode. Any change (a file rewritten, the symlink swapped) is a new version.
Signature = tuple[str, tuple[tuple[str, int, int, int], ...]]


@dataclass
class Graph:
    """One ONNX graph: a session and its input and output names, read from the session."""

    session: ort.InferenceSession
    input_name: str
    output_name: str

    def run(self, inputs: np.ndarray) -> np.ndarray:
        (outputs,) = self.session.run([self.output_name], {self.input_name: inputs})
        return np.asarray(outputs)


@dataclass(frozen=True)
class Inference:
    """A graph's outputs for a request's inputs and, where the inputs were images, their anomaly scores."""

    outputs: np.ndarray
    #: One float per input, higher for inputs less like the training data; ``None`` for latents.
    scores: np.ndarray | None
    threshold: float

    @property
    def anomalous(self) -> list[bool] | None:
        return None if self.scores is None else [bool(score > self.threshold) for score in self.scores]


@dataclass
class LoadedModel:
    manifest: Manifest
    path: Path
    provider: str
    graphs: dict[GraphName, Graph]
    #: The file each graph was read from (the autoencoder's int8 copy, where it runs).
    files: dict[GraphName, str] = field(default_factory=dict)
    batchers: dict[GraphName, Batcher] = field(default_factory=dict)
    observer: Observer = field(default_factory=_Unobserved)
    warmup_ms: float = 0.0
    #: The bundle's files as they were when it was loaded (:func:`bundle_signature`).
    signature: Signature | None = None
    #: The sample images (``label`` and base64 ``png``), read with the bundle; why there are none, if so.
    samples: list[dict[str, str]] = field(default_factory=list, repr=False)
    samples_problem: str | None = None

    @property
    def version(self) -> str:
        return self.manifest.version

    async def close(self) -> None:
        """Finish the work queued and running on the batchers, stop them and let the sessions go."""
        for batcher in self.batchers.values():
            await batcher.stop()
        self.batchers.clear()
        self.graphs.clear()
        release_freed_memory()

    async def infer(self, graph: GraphName, inputs: np.ndarray, until: Until = ALWAYS) -> Inference:
        """Run ``graph`` on ``inputs`` while the work is wanted (:class:`~app.runtime.batcher.Until`)."""
        return self._inference(await self.batchers[graph].submit(inputs, until))

    async def infer_batches(
        self, graph: GraphName, batches: AsyncIterator[np.ndarray], until: Until = ALWAYS
    ) -> Inference:
        """Run ``graph`` on a large request produced a batch (at most ``batch_size(graph)`` images) at a
        time, each batch running while the next is produced (:meth:`Batcher.submit_batches`)."""
        return self._inference(await self.batchers[graph].submit_batches(batches, until))

    def batch_size(self, graph: GraphName) -> int:
        """The most images one ONNX Runtime call of ``graph`` takes."""
        return self.batchers[graph].max_batch

    def _inference(self, outputs: Outputs) -> Inference:
        scores = outputs[1][:, 0] if len(outputs) > 1 else None
        threshold = self.manifest.anomaly.threshold
        if scores is not None:
            self.observer.observe_scores(self.manifest.name, scores, int(np.count_nonzero(scores > threshold)))
        return Inference(outputs[0], scores, threshold)

    def runner(self, graph: GraphName, scored: bool) -> Callable[[np.ndarray], Outputs]:
        """One inference call for ``graph``'s batcher: the graph, and the scorer where it reads images
        (unless scoring is off)."""
        main = self.graphs[graph]
        if not scored or graph not in SCORED:
            return lambda inputs: (main.run(inputs),)
        scorer = self.graphs["scorer"]
        return lambda inputs: (main.run(inputs), scorer.run(inputs))

    def summary(self) -> dict[str, object]:
        return {
            **self.manifest.summary(),
            "provider": self.provider,
            "graphs": dict(self.files),
            "warmup_ms": round(self.warmup_ms, 1),
        }


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None  # glibc's; absent from musl
    return cast("Callable[[int], int] | None", trim)


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Hand the memory of closed sessions back to the system: glibc keeps what other threads freed in
    their arenas, and the resident size of a worker that reloads models would otherwise creep up."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
