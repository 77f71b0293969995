"""The models in service.

The registry holds the bundles in service (loaded with :mod:`app.runtime.bundles`); :mod:`app.repository`
decides what is in service, at start and while the service runs (a new version loaded beside the old one,
then swapped in; the old one closed once its work is done), and keeps everything else known of each bundle.
Whoever needs to follow the models in service (the V2 catalog) listens.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.config import Settings
from app.runtime.batcher import Batcher
from app.runtime.bundles import bundle_signature, load_bundle, warm_up, warmup_sizes
from app.runtime.model import SERVED, LoadedModel, Observer, _Unobserved
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
    """The models in service by name, with their batchers; what else is known of each bundle (refused versions,
    unloads, start-up failures, readiness) is :class:`app.repository.ModelRepository`'s."""

    settings: Settings
    models: dict[str, LoadedModel] = field(default_factory=dict)
    observer: Observer = field(default_factory=_Unobserved)
    #: Whether the caller is the worker's only request in progress (see :mod:`app.runtime.batcher`).
    alone: Callable[[], bool] = _never_alone
    #: Called whenever the models in service change (the V2 catalog follows them).
    listeners: list[Callable[[], None]] = field(default_factory=list)
    #: The batchers run: between start-up's :meth:`start_batchers` and :meth:`stop`.
    running: bool = False

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

    def start_batchers(self, observer: Observer, alone: Callable[[], bool] = _never_alone) -> None:
        """One batcher per served graph, reporting to ``observer``; ``alone`` says whether the caller is the
        worker's only request in progress (then an idle batcher runs a small request on the spot: see
        :mod:`app.runtime.batcher`)."""
        self.observer, self.alone = observer, alone
        for model in self.models.values():
            self.start(model)
        self.running = True
        self._changed()

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
        """Put ``model`` in service in place of its namesake; the one it replaces, if any."""
        replaced = self.models.get(model.manifest.name)
        self.models[model.manifest.name] = model
        self._changed()
        return replaced

    def remove(self, name: str) -> LoadedModel | None:
        """Take the model ``name`` out of service; it, if it was there."""
        removed = self.models.pop(name, None)
        self._changed()
        return removed

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def work(self) -> list[tuple[str, str, int, int]]:
        """Each served graph's batcher now: model, graph, batches of work waiting, waiting or running."""
        return [
            (name, graph, batcher.depth, batcher.pending)
            for name, model in self.models.items()
            for graph, batcher in model.batchers.items()
        ]

    async def stop(self) -> None:
        self.running = False
        for model in self.models.values():
            await model.close()

    def __iter__(self) -> Iterator[LoadedModel]:
        return iter(self.models.values())
