"""Model bundles on disk: finding them, verifying and opening them into ONNX Runtime sessions, warming them.

A bundle that fails to load (malformed manifest, checksum mismatch, missing or corrupt graph, graph
disagreeing with its manifest, a file that is not a regular file or is over its size limit) raises
:class:`~denoise_bundle.BundleError` naming the file relative to the model folder. A provider error
(``cuda`` requested without a usable GPU) stops the service.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.config import Settings
from app.runtime.model import Graph, LoadedModel, Signature
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
            read_graph(bundle, spec)  # not run here, but a bundle is whole or refused: every graph is checked
            spec = manifest.int8.graph
        elif name == "autoencoder" and manifest.int8 is not None:
            read_graph(bundle, manifest.int8.graph)
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
