"""Loading, verifying and warming model bundles into ONNX Runtime sessions.

A bundle that fails to load (malformed manifest, checksum mismatch, missing or
corrupt graph, graph disagreeing with its manifest) is left out with its reason;
the other bundles still serve. A provider error (``cuda`` requested without a
usable GPU) stops the service.

The registry holds the models in service; :mod:`app.repository` changes them while the service
runs (a new version loaded beside the old one, then swapped in; the old one closed once its work is done).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import onnxruntime as ort

from app.config import Settings
from app.errors import ModelNotFound, clip
from app.runtime.batcher import ALWAYS, Batcher, Outputs, Until
from app.runtime.providers import CPU, available_providers, check_active, requested_providers
from denoise_bundle import (
    GRAPHS,
    MANIFEST_FILE,
    MAX_SAMPLE_BYTES,
    SAMPLES_INDEX,
    SCORE_SHAPE,
    BundleError,
    GraphSpec,
    Manifest,
    load_manifest,
    read_bounded,
    read_graph,
    shown,
)
from denoise_bundle.manifest import GraphName

log = logging.getLogger("denoise.runtime")


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
SCORED: frozenset[GraphName] = frozenset({"autoencoder", "encoder"})


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
            self.observer.observe_scores(self.manifest.name, scores, int((scores > threshold).sum()))
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


#: A bundle folder as found on disk: where it resolves to (a symlink followed), and each file's name,
#: size, modification time and inode. Any change (a file rewritten, the symlink swapped) is a new version.
Signature = tuple[str, tuple[tuple[str, int, int, int], ...]]


def bundle_signature(bundle: Path) -> Signature | None:
    """The folder's :data:`Signature`, or None when it is not there."""
    try:
        resolved = bundle.resolve(strict=True)
        entries = []
        with os.scandir(resolved) as listing:
            for entry in listing:
                if entry.is_file():
                    stat = entry.stat()
                    entries.append((entry.name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    except OSError:
        return None
    return str(resolved), tuple(sorted(entries))


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _check_shape(path: str, what: str, actual: list[object], expected: tuple[int | None, ...]) -> None:
    """Compare a session's tensor shape with the manifest, dynamic dimensions matching anything."""
    fixed = [dim if isinstance(dim, int) else None for dim in actual]
    if len(fixed) != len(expected) or any(
        a is not None and e is not None and a != e for a, e in zip(fixed, expected, strict=True)
    ):
        raise BundleError(f"{path}: {what} shape is {actual} but the manifest says {list(expected)}")


def _open_graph(bundle: Path, spec: GraphSpec, settings: Settings, providers: list[str]) -> ort.InferenceSession:
    """A session on the graph's bytes, read once (bounded, regular files only) and checked against the manifest."""
    path = shown(bundle / spec.file)
    data = read_graph(bundle, spec)
    try:
        session = ort.InferenceSession(data, session_options(settings), providers=providers)
    except Exception as exc:
        raise BundleError(f"{path}: onnxruntime cannot load the graph: {exc}") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise BundleError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
    if (inputs[0].name, outputs[0].name) != (spec.input.name, spec.output.name):
        raise BundleError(
            f"{path}: tensors are {inputs[0].name!r} -> {outputs[0].name!r}, "
            f"the manifest says {spec.input.name!r} -> {spec.output.name!r}"
        )
    _check_shape(path, "input", inputs[0].shape, spec.input.shape)
    _check_shape(path, "output", outputs[0].shape, spec.output.shape)
    return session


def _check_consistent(bundle: Path, manifest: Manifest) -> None:
    image = (None, *manifest.image_shape)
    latent = (None, *manifest.latent_shape)
    expected: dict[GraphName, tuple[tuple[int | None, ...], tuple[int | None, ...]]] = {
        "autoencoder": (image, image),
        "encoder": (image, latent),
        "decoder": (latent, image),
        "scorer": (image, (None, *SCORE_SHAPE)),
    }
    for name, (inp, out) in expected.items():
        spec = manifest.graphs[name]
        if spec.input.shape != inp or spec.output.shape != out:
            raise BundleError(
                f"{shown(bundle / MANIFEST_FILE)}: graph {name!r} maps {list(spec.input.shape)} -> "
                f"{list(spec.output.shape)}, expected {list(inp)} -> {list(out)}"
            )


def warmup_sizes(settings: Settings) -> list[int]:
    """Every batch size an ONNX Runtime call can have (larger requests run in chunks)."""
    return list(range(1, settings.batch_max_size + 1))


def load_bundle(bundle: Path, settings: Settings) -> LoadedModel:
    """Verify and open one bundle; raise BundleError naming the file at fault."""
    manifest = load_manifest(bundle)
    _check_consistent(bundle, manifest)
    requested = requested_providers(settings.providers, available_providers())
    graphs: dict[GraphName, Graph] = {}
    files: dict[GraphName, str] = {}
    provider = ""
    # The autoencoder opens last, once the provider is known: on CPU it runs from the bundle's int8 copy
    # where there is one (it passed its PSNR gate at export; a GPU runs float32).
    for name in sorted(GRAPHS, key=lambda graph: graph == "autoencoder"):
        spec = manifest.graphs[name]
        if name == "autoencoder" and settings.int8 and manifest.int8 is not None and provider == CPU:
            spec = manifest.int8.graph
        session = _open_graph(bundle, spec, settings, requested)
        provider = check_active(settings.providers, requested, session.get_providers(), shown(bundle / spec.file))
        graphs[name] = Graph(session, session.get_inputs()[0].name, session.get_outputs()[0].name)
        files[name] = spec.file
    samples, samples_problem = read_samples(bundle)
    return LoadedModel(
        manifest=manifest,
        path=bundle,
        provider=provider,
        graphs={name: graphs[name] for name in GRAPHS},
        files={name: files[name] for name in GRAPHS},
        samples=samples,
        samples_problem=samples_problem,
    )


def read_samples(bundle: Path) -> tuple[list[dict[str, str]], str | None]:
    """The bundle's sample images (``label`` and base64 ``png``), read when it loads; none, with why, when the
    bundle ships none or its index is broken (samples are optional: the bundle still serves)."""
    index_file = bundle / SAMPLES_INDEX
    if not index_file.exists():
        return [], "ships no sample images"
    try:
        index = json.loads(read_bounded(index_file, MAX_SAMPLE_BYTES))
        if not isinstance(index, list) or not all(
            isinstance(item, dict) and isinstance(item.get("file"), str) and "label" in item for item in index
        ):
            raise BundleError(f"{shown(index_file)}: not a list of {{'file', 'label'}} objects")
        samples = []
        for item in index:
            if Path(item["file"]).name != item["file"]:  # no path leaves the folder
                raise BundleError(f"{shown(index_file)}: names {item['file'][:80]!r}, outside the samples folder")
            data = read_bounded(index_file.parent / item["file"], MAX_SAMPLE_BYTES)
            samples.append({"label": str(item["label"])[:80], "png": base64.b64encode(data).decode()})
    except (BundleError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = f"sample images unusable: {exc}"
        log.warning("model %s: %s", bundle.name, reason)
        return [], reason
    return samples, None


def warm_up(model: LoadedModel, sizes: list[int]) -> None:
    """Run every graph once at every size, so no caller pays a first-call cost."""
    started = time.perf_counter()
    shapes: dict[GraphName, tuple[int, ...]] = {
        "autoencoder": model.manifest.image_shape,
        "encoder": model.manifest.image_shape,
        "decoder": model.manifest.latent_shape,
        "scorer": model.manifest.image_shape,
    }
    for name, graph in model.graphs.items():
        for size in sizes:
            graph.run(np.zeros((size, *shapes[name]), dtype=np.float32))
    model.warmup_ms = (time.perf_counter() - started) * 1000


def discover(settings: Settings) -> list[Path]:
    """Bundle folders to load: the configured names, or every folder holding a manifest."""
    if settings.model_names:
        return [settings.model_dir / name for name in settings.model_names]
    if not settings.model_dir.is_dir():
        return []
    return sorted(p for p in settings.model_dir.iterdir() if (p / MANIFEST_FILE).is_file())


def _never_alone() -> bool:
    return False


@dataclass
class Registry:
    settings: Settings
    models: dict[str, LoadedModel] = field(default_factory=dict)
    #: Bundles that failed to load at start (and have not loaded since), by folder name, with the reason;
    #: while there are any, the service is not ready.
    failures: dict[str, str] = field(default_factory=dict)
    #: Bundles taken out of service on purpose (the V2 repository API's unload): they do not count
    #: against readiness, as in Triton with explicit model control.
    unloaded: set[str] = field(default_factory=set)
    ready: bool = False
    observer: Observer = field(default_factory=_Unobserved)
    #: Whether the caller is the worker's only request in progress (see :mod:`app.runtime.batcher`).
    alone: Callable[[], bool] = _never_alone
    #: Called whenever the models in service change (the V2 catalog follows them).
    listeners: list[Callable[[], None]] = field(default_factory=list)
    _started: bool = False

    def load(self, bundle: Path) -> LoadedModel:
        """Verify, open and warm one bundle (blocking: call it from a worker thread); BundleError names
        the file at fault."""
        signature = bundle_signature(bundle)
        if not bundle.is_dir():
            what = "a symlink to nothing" if bundle.is_symlink() else "not a folder"
            raise BundleError(f"{bundle.name}: {what}; a bundle is a folder (or a symlink to one)")
        model = load_bundle(bundle, self.settings)
        if model.manifest.name != bundle.name:
            raise BundleError(
                f"{shown(bundle / MANIFEST_FILE)}: names model {model.manifest.name!r}, folder is {bundle.name!r}"
            )
        sizes = warmup_sizes(self.settings)
        warm_up(model, sizes)
        model.signature = signature
        log.info(
            "model %s %s loaded from %s on %s, warmed %d batch sizes in %.0f ms",
            model.manifest.name,
            model.manifest.version,
            bundle,
            model.provider,
            len(sizes),
            model.warmup_ms,
        )
        return model

    def load_all(self) -> dict[str, Signature | None]:
        """Load and warm every bundle (blocking: call it from a worker thread); the files of each bundle tried."""
        bundles = discover(self.settings)
        if not bundles:
            self.failures["*"] = f"no model bundles found in {self.settings.model_dir.resolve()}"
            log.error("%s", self.failures["*"])
        tried: dict[str, Signature | None] = {}
        for bundle in bundles:
            tried[bundle.name] = bundle_signature(bundle)
            try:
                model = self.load(bundle)
            except BundleError as exc:
                self.failures[bundle.name] = str(exc)
                log.error("model %s not loaded: %s", bundle.name, exc)
                continue
            self.models[model.manifest.name] = model
        return tried

    def start_batchers(self, observer: Observer, alone: Callable[[], bool] = _never_alone) -> None:
        """One batcher per served graph, reporting to ``observer``; ``alone`` says whether the caller is the
        worker's only request in progress (then an idle batcher runs a small request on the spot: see
        :mod:`app.runtime.batcher`)."""
        self.observer, self.alone = observer, alone
        for model in self.models.values():
            self.start(model)
        self._started = True
        self._update()

    def start(self, model: LoadedModel) -> None:
        """Give ``model`` its batchers (on the event loop)."""
        model.observer = self.observer
        for name in SERVED:
            batcher = Batcher(
                model.runner(name, self.settings.anomaly_scores),
                name=f"{model.manifest.name}/{name}",
                max_batch=self.settings.batch_max_size,
                max_delay_s=self.settings.batch_max_delay_ms / 1000,
                queue_size=self.settings.queue_size,
                merge=self.settings.batching,
                concurrency=self.settings.concurrent_batches,
                on_batch=functools.partial(self.observer.observe_batch, model.manifest.name, name),
                alone=self.alone,
            )
            batcher.start()
            model.batchers[name] = batcher

    def install(self, model: LoadedModel) -> LoadedModel | None:
        """Put a started ``model`` in service in place of its namesake; the one it replaces, if any."""
        name = model.manifest.name
        replaced = self.models.get(name)
        self.models[name] = model
        self.failures.pop(name, None)
        self._update()
        return replaced

    def remove(self, name: str) -> LoadedModel | None:
        """Take the model ``name`` out of service; it, if it was there. A bundle gone from disk takes its
        start-up failure with it."""
        self.failures.pop(name, None)
        removed = self.models.pop(name, None)
        self._update()
        return removed

    def set_unloaded(self, names: set[str]) -> None:
        """The bundles unloaded on purpose, as the repository decided them."""
        self.unloaded = set(names)
        self._update()

    def _update(self) -> None:
        """Readiness: every bundle found at start loaded (or gone since, or unloaded on purpose), and the
        default model among them unless it was unloaded on purpose."""
        default = self.settings.default_model
        missing = f"default model {default!r} is not loaded (DENOISE_DEFAULT_MODEL)"
        if self.models and default not in self.models and default not in self.unloaded:
            self.failures.setdefault(default, missing)
        elif self.failures.get(default) == missing:
            del self.failures[default]
        if self.models or self.unloaded:
            self.failures.pop("*", None)
        self.ready = self._started and bool(self.models or self.unloaded) and not self.failures
        for listener in self.listeners:
            listener()

    def not_ready_reason(self) -> str | None:
        """Why the service is not ready, in one sentence; None when it is."""
        if self.ready:
            return None
        if not self._started:
            return "starting: the models are loading and warming up"
        if self.failures:
            return "; ".join(f"{name}: {why}" for name, why in sorted(self.failures.items()))
        return "no model is in service"

    def work(self) -> list[tuple[str, str, int, int]]:
        """Each served graph's batcher now: model, graph, batches of work waiting, waiting or running."""
        return [
            (name, graph, batcher.depth, batcher.pending)
            for name, model in self.models.items()
            for graph, batcher in model.batchers.items()
        ]

    async def stop(self) -> None:
        self.ready = False
        self._started = False
        for model in self.models.values():
            await model.close()

    def get(self, name: str | None) -> LoadedModel:
        key = name or self.settings.default_model
        model = self.models.get(key)
        if model is None and key in self.unloaded:
            raise ModelNotFound(
                f"model {key!r} was unloaded through the repository API; an admin loads it again with "
                f"POST /v2/repository/models/{key}/load"
            )
        if model is None:
            loaded = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {clip(key)!r}; loaded models: {loaded} (GET /models lists them)")
        return model

    def __iter__(self) -> Iterator[LoadedModel]:
        return iter(self.models.values())
