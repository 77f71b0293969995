"""The models in service, and readiness.

The registry holds the bundles in service (loaded with :mod:`app.runtime.bundles`); :mod:`app.repository`
changes them while the service runs (a new version loaded beside the old one, then swapped in; the old
one closed once its work is done). Whoever needs to follow the change (the V2 catalog) listens.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.config import Settings
from app.errors import ModelNotFound, clip
from app.runtime.batcher import Batcher
from app.runtime.bundles import bundle_signature, discover, load_bundle, warm_up, warmup_sizes
from app.runtime.model import SERVED, LoadedModel, Observer, Signature, _Unobserved
from denoise_bundle import (
    MANIFEST_FILE,
    BundleError,
    shown,
)

log = logging.getLogger("denoise.runtime")


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
