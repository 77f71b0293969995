"""Models that change without a restart: scanning the model folder, the V2 repository's load and
unload, and swapping versions under load with nothing lost.

- Every ``DENOISE_MODEL_POLL_S`` each worker compares the bundle folders in ``DENOISE_MODEL_DIR``
  with what it serves (:func:`~app.runtime.bundles.bundle_signature`: where a folder resolves to,
  so a swapped symlink counts, and its files' sizes, times and inodes). A new or changed bundle is
  verified (checksums of every graph, shapes, the int8 gate), loaded and warmed in a worker thread
  beside the version in service, then swapped in; a bundle gone from disk is taken out of service.
  A scan loads a changed bundle once two looks in a row found its files the same, so that a copy
  still being written is not loaded half-way (and again when it is complete). A name still in the
  folder whose files cannot be loaded (a dangling or swapped-in broken symlink, a folder without a
  manifest) is a refused version, not a bundle gone: the version in service serves on.
- The version replaced keeps its batchers until every request admitted before the swap has finished
  (:meth:`~app.context.WorkInProgress.drained`): requests already queued or running end on it; then
  its sessions are closed and freed.
- A version that does not load is refused: logged, counted (``denoise_model_changes_total``), shown
  in ``/models`` and the repository index with its reason; the version in service keeps serving and
  readiness does not change. The same files are not tried again until they change.
- The V2 repository API (:meth:`ModelRepository.load`, :meth:`~ModelRepository.unload`) works on
  bundles: ``load`` (re)loads one from disk now, ``unload`` takes it out of service until it is
  loaded again (scans leave it out meanwhile). With several workers, the decision is written to the
  workers' shared folder (``DENOISE_WORKER_STATE_DIR``) and every worker follows it at its next look
  (within :data:`CONTROL_CHECK_S`, or the poll period when that is shorter); each worker publishes
  there what it serves, which ``/models`` shows for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.context import WorkInProgress
from app.errors import ApiError, ModelNotFound, NotReady, clip, unloaded_message
from app.metrics import Metrics
from app.runtime.bundles import bundle_signature, discover
from app.runtime.model import SERVED, LoadedModel, Signature, bundle_of
from app.runtime.registry import Registry
from denoise_bundle import BundleError, load_manifest

log = logging.getLogger("denoise.models")

#: Seconds between two looks at the shared load and unload decisions when scanning is off.
CONTROL_CHECK_S = 1.0
READY, UNAVAILABLE = "READY", "UNAVAILABLE"


class LoadRefused(ApiError):
    """A bundle asked for through the repository API did not load; the version in service, if any, serves on."""

    status, code = 400, "load_refused"


@dataclass(frozen=True)
class Refusal:
    """A version that did not load, and why."""

    version: str
    reason: str

    def summary(self) -> dict[str, str]:
        return {"version": self.version, "reason": self.reason}


@dataclass
class BundleRecord:
    """What this worker knows of one bundle, besides the model it serves (the registry's): the one record
    :meth:`ModelRepository.sync` reads and changes, and readiness is read from."""

    #: The files of the last attempt to load it, so that files already refused are not tried again.
    tried: Signature | None = None
    #: The files the last scan saw: a change is loaded once it holds still for a scan.
    seen: Signature | None = None
    #: The version refused while the one in service (if any) serves on.
    refused: Refusal | None = None
    #: Taken out of service through the repository API, until loaded again.
    unloaded: bool = False
    #: Explicit loads followed (the shared count goes up with each load call, in whichever worker).
    loads: int = 0
    #: Found at start: until it is in service (or leaves the folder, or is unloaded on purpose), the service
    #: is not ready.
    expected: bool = False


class Step(Enum):
    """What a look at the shared decisions and the model folder does with one bundle (:func:`next_step`)."""

    #: Out of service: unloaded through the repository API (in whichever worker), until loaded again.
    UNLOADED = "unloaded"
    #: Out of service: its folder left the model folder; what was known of its files is forgotten.
    GONE = "gone"
    #: (Re)load now: a load was asked for (in whichever worker) since this worker last followed one.
    LOAD = "load"
    #: Serve on; on a folder scan, load its files if they changed and held still since the previous scan.
    WATCH = "watch"


def next_step(record: BundleRecord, loads_wanted: int, on_disk: bool) -> Step:
    """The rule for one bundle, from what is wanted (the shared decisions: ``record.unloaded`` and the count
    of loads asked for) and what is there (``on_disk``); an unload wins over the folder, a load over a scan."""
    if record.unloaded:
        return Step.UNLOADED
    if not on_disk:
        return Step.GONE
    if loads_wanted > record.loads:
        return Step.LOAD
    return Step.WATCH


def check_load_parameters(parameters: dict[str, Any]) -> None:
    """A load request may not carry a configuration or files (Triton's overrides): bundles come from the
    model folder only."""
    overrides = sorted(key for key in parameters if key == "config" or key.startswith("file:"))
    if overrides:
        raise ApiError(
            f"load parameters {', '.join(overrides)} are not supported: bundles are loaded from the model folder "
            "(DENOISE_MODEL_DIR) as they are; put the new version there and load it by name"
        )


def _version_on_disk(bundle: Path) -> str:
    try:
        return load_manifest(bundle).version
    except BundleError:
        return "unknown"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(data, handle)
    os.replace(handle.name, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedState:
    """The workers' shared folder: the repository API's decisions (``repository.json``: bundles unloaded,
    and how many times each was explicitly loaded) and what each worker serves (``worker-<pid>.json``)."""

    CONTROL = "repository.json"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def control(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.folder / self.CONTROL).read_text())
        except (OSError, ValueError):
            data = {}
        return {"unloaded": sorted(data.get("unloaded", [])), "loads": dict(data.get("loads", {}))}

    def change(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, change and write the decisions under a lock; the decisions as written."""
        with _locked(self.folder / f".{self.CONTROL}.lock"):
            control = self.control()
            change(control)
            _write_atomically(self.folder / self.CONTROL, control)
        return control

    def publish(self, status: dict[str, Any]) -> None:
        _write_atomically(self.folder / f"worker-{os.getpid()}.json", status)

    def withdraw(self) -> None:
        (self.folder / f"worker-{os.getpid()}.json").unlink(missing_ok=True)

    def workers(self) -> list[dict[str, Any]]:
        """What each live worker last published."""
        found = []
        for path in sorted(self.folder.glob("worker-*.json")):
            try:
                status: dict[str, Any] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _alive(int(status.get("pid", 0))):
                found.append(status)
        return found


class ModelRepository:
    def __init__(self, registry: Registry, work: WorkInProgress, metrics: Metrics, grace_s: float) -> None:
        self.registry = registry
        self.settings = registry.settings
        self.work = work
        self.metrics = metrics
        self.grace_s = grace_s
        folder = self.settings.worker_state_dir
        self.shared = SharedState(folder) if folder is not None else None
        #: One record per bundle (:class:`BundleRecord`).
        self.records: dict[str, BundleRecord] = {}
        self._lock = asyncio.Lock()
        #: Versions taken out of service and not closed yet (:meth:`_retire`).
        self._retiring: set[asyncio.Task[None]] = set()
        #: The model folder held no bundle at start.
        self._none_found = False

    # What is on disk

    def _on_disk(self) -> dict[str, Path]:
        """Bundle folders by name: those :func:`discover` finds, and any name served or refused whose entry
        is still in the folder, loadable or not (so that a broken rollout is refused, not taken as removal)."""
        found = {path.name: path for path in discover(self.settings) if path.is_dir()}
        for name in {*self.registry.models, *self.refused} - set(found):
            path = self.settings.model_dir / name
            if os.path.lexists(path):
                found[name] = path
        return found

    def record(self, name: str) -> BundleRecord:
        return self.records.setdefault(name, BundleRecord())

    @property
    def refused(self) -> dict[str, Refusal]:
        """The versions refused while the one in service (if any) serves on, by bundle."""
        return {name: r.refused for name, r in sorted(self.records.items()) if r.refused is not None}

    def _set_unloaded(self, names: set[str] | frozenset[str]) -> None:
        for name in names | self.unloaded:
            self.record(name).unloaded = name in names

    @property
    def unloaded(self) -> frozenset[str]:
        """The bundles taken out of service through the repository API (in whichever worker)."""
        return frozenset(name for name, r in self.records.items() if r.unloaded)

    # Readiness, and the model a request names

    def failed(self) -> dict[str, str]:
        """Why the service is not ready, by bundle (``*``: the model folder as a whole): a bundle found at
        start that is not in service, or the default model missing. Bundles unloaded on purpose do not count,
        as in Triton with explicit model control."""
        served, unloaded = self.registry.models, self.unloaded
        failed = {}
        if self._none_found and not served and not unloaded:
            failed["*"] = f"no model bundles found in {self.settings.model_dir.resolve()}"
        for name, record in sorted(self.records.items()):
            if record.expected and name not in served and not record.unloaded:
                failed[name] = record.refused.reason if record.refused is not None else "not loaded"
        default = self.settings.default_model
        if served and default not in served and default not in unloaded:
            failed.setdefault(default, f"default model {default!r} is not loaded (DENOISE_DEFAULT_MODEL)")
        return failed

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why the service is not ready, in one sentence; None when it is."""
        if not self.registry.running:
            return "starting: the models are loading and warming up"
        failed = self.failed()
        if failed:
            return "; ".join(f"{name}: {why}" for name, why in failed.items())
        if not self.registry.models and not self.unloaded:
            return "no model is in service"
        return None

    def served(self, name: str | None) -> LoadedModel:
        """The model in service under ``name`` (the default model for None); 503 while there is none at all,
        404 saying why for a name not in service."""
        key = name or self.settings.default_model
        model = self.registry.models.get(key)
        if model is not None:
            return model
        if not self.registry.models and not self.unloaded:
            raise NotReady(f"no model is loaded: {self.not_ready_reason()}", headers={"Retry-After": "5"})
        if key in self.unloaded:
            raise ModelNotFound(unloaded_message(key, key))
        loaded = ", ".join(sorted(self.registry.models)) or "none"
        raise ModelNotFound(f"no model named {clip(key)!r}; loaded models: {loaded} (GET /models lists them)")

    async def bundle(self, name: str) -> tuple[str, Path | None]:
        """The bundle a V2 name belongs to (``mnist`` and ``mnist-encoder`` are both bundle ``mnist``) and its
        folder (None when it is not on disk); 404 for a name no bundle answers to. The folder is read in a
        worker thread."""
        on_disk = await run_in_threadpool(self._on_disk)
        known = set(on_disk) | set(self.registry.models)
        if name not in known:
            if bundle_of(name) not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ModelNotFound(f"no bundle named {clip(name)!r} in the model folder; bundles: {names}")
            name = bundle_of(name)
        return name, on_disk.get(name)

    # Start-up, and the scans

    def load_at_start(self) -> None:
        """Load and warm every bundle in the model folder, before the batchers start (blocking: call it from a
        worker thread). A bundle that does not load is refused, and the service is not ready until it loads or
        leaves the folder; the files tried are recorded, so that a scan tries only what changed since."""
        bundles = discover(self.settings)
        self._none_found = not bundles
        if not bundles:
            log.error("no model bundles found in %s", self.settings.model_dir.resolve())
        for bundle in bundles:
            record = self.record(bundle.name)
            record.expected = True
            record.tried = record.seen = bundle_signature(bundle)
            try:
                model = self.registry.load(bundle)
            except BundleError as exc:
                record.refused = Refusal(_version_on_disk(bundle), str(exc))
                log.error("model %s not loaded: %s", bundle.name, exc)
                continue
            self.registry.install(model)

    def started(self) -> None:
        """Follow the loads counted in the shared folder so far (they happened before this worker), and publish."""
        if self.shared is not None:
            control = self.shared.control()
            for name, count in control["loads"].items():
                self.record(name).loads = int(count)
        self.publish()

    async def watch(self) -> None:
        """Follow the shared decisions (every :data:`CONTROL_CHECK_S` at most) and the model folder (every
        ``DENOISE_MODEL_POLL_S``) until cancelled."""
        poll_s = self.settings.model_poll_s
        if poll_s == 0 and self.shared is None:
            return
        if poll_s == 0:  # the shared decisions alone
            period = CONTROL_CHECK_S
        elif self.shared is None:  # the folder alone
            period = poll_s
        else:
            period = min(poll_s, CONTROL_CHECK_S)
        next_scan = time.monotonic() + poll_s
        while True:
            await asyncio.sleep(period)
            scan = poll_s > 0 and time.monotonic() >= next_scan
            if scan:
                next_scan = time.monotonic() + poll_s
            try:
                await self.sync(scan=scan)
            except Exception:
                log.exception("looking for model changes failed; trying again in %g s", period)

    async def sync(self, scan: bool = True) -> None:
        """Bring this worker in line with the shared decisions and (``scan``) the model folder."""
        async with self._lock:
            if self.shared is not None:
                control = await run_in_threadpool(self.shared.control)
                self._set_unloaded(set(control["unloaded"]))
                wanted = {name: int(count) for name, count in control["loads"].items()}
            else:
                wanted = {name: r.loads for name, r in self.records.items()}
            on_disk = await run_in_threadpool(self._on_disk)
            changed = False
            for name in sorted(set(on_disk) | set(self.registry.models) | set(self.refused)):
                record, path = self.record(name), on_disk.get(name)
                step = next_step(record, wanted.get(name, 0), on_disk=path is not None)
                if step is Step.UNLOADED:
                    changed |= await self._take_out(name, "unloaded through the repository API")
                elif step is Step.GONE:
                    changed |= await self._take_out(name, "its folder left the model folder")
                    record.refused = record.tried = record.seen = None
                    record.expected = False
                elif path is not None and (step is Step.LOAD or (scan and await self._settled_change(name, path))):
                    await self._put_in(name, path)
                    changed = True
                record.loads = max(record.loads, wanted.get(name, 0))
            if changed:
                self.publish()

    async def _settled_change(self, name: str, path: Path) -> bool:
        """Whether the bundle's files differ from those last tried and are as the previous scan saw them."""
        signature = await run_in_threadpool(bundle_signature, path)
        record = self.record(name)
        seen, record.seen = record.seen, signature
        if signature == record.tried:
            return False
        if signature != seen:
            log.info("model %s: files changed; loading them once they hold still until the next scan", name)
            return False
        return True

    # The repository API

    async def load(self, name: str) -> str:
        """(Re)load a bundle from disk now, in every worker; :class:`LoadRefused` if it does not load; the
        bundle's name."""
        name, path = await self.bundle(name)
        if path is None:
            raise ModelNotFound(f"bundle {name!r} is not in the model folder; nothing to load")

        def decide(control: dict[str, Any]) -> None:
            control["unloaded"] = [other for other in control["unloaded"] if other != name]
            control["loads"][name] = int(control["loads"].get(name, 0)) + 1

        async with self._lock:
            if self.shared is not None:
                count = int((await run_in_threadpool(self.shared.change, decide))["loads"][name])
            else:
                count = self.record(name).loads + 1
            self._set_unloaded(self.unloaded - {name})
            self.record(name).loads = count
            loaded = await self._put_in(name, path)
            self.publish()
        if not loaded:
            raise LoadRefused(f"bundle {name!r} did not load: {self.refused[name].reason}")
        return name

    async def unload(self, name: str) -> str:
        """Take a bundle out of service in every worker until it is loaded again; the bundle's name."""
        name, _ = await self.bundle(name)

        def decide(control: dict[str, Any]) -> None:
            control["unloaded"] = sorted({*control["unloaded"], name})

        async with self._lock:
            if self.shared is not None:
                await run_in_threadpool(self.shared.change, decide)
            self._set_unloaded(self.unloaded | {name})
            await self._take_out(name, "unloaded through the repository API")
            self.publish()
        return name

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: every V2 model of every bundle on disk or in service, with its state."""
        entries = []
        on_disk = self._on_disk()
        for name in sorted(set(on_disk) | set(self.registry.models)):
            serving = self.registry.models.get(name)
            names = [name, *(f"{name}-{graph}" for graph in SERVED)]
            if serving is not None:
                entries += [{"name": v2, "version": serving.version, "state": READY} for v2 in names]
            if ready_only:
                continue
            refusal = self.refused.get(name)
            if refusal is not None:
                reason = f"version {refusal.version} refused: {refusal.reason}"
                entries += [
                    {"name": v2, "version": refusal.version, "state": UNAVAILABLE, "reason": reason} for v2 in names
                ]
            elif serving is None:
                path = on_disk.get(name)
                version = _version_on_disk(path) if path is not None else "unknown"
                reason = "unloaded through the repository API" if name in self.unloaded else "not loaded"
                entries += [{"name": v2, "version": version, "state": UNAVAILABLE, "reason": reason} for v2 in names]
        return entries

    # What this worker serves

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "models": {name: model.version for name, model in sorted(self.registry.models.items())},
            "refused": {name: refusal.summary() for name, refusal in self.refused.items()},
        }

    def workers(self) -> list[dict[str, Any]]:
        """What every worker of the service serves and refused (this one alone without a shared folder)."""
        return self.shared.workers() if self.shared is not None else [self.status()]

    def publish(self) -> None:
        if self.shared is not None:
            self.shared.publish(self.status())

    def close(self) -> None:
        if self.shared is not None:
            self.shared.withdraw()

    # Changes

    async def _put_in(self, name: str, path: Path) -> bool:
        """Load, verify and warm ``path`` beside the version in service, then swap it in; whether it loaded."""
        signature = await run_in_threadpool(bundle_signature, path)
        record = self.record(name)
        record.tried = record.seen = signature
        started = time.perf_counter()
        try:
            model = await run_in_threadpool(self.registry.load, path)
        except BundleError as exc:
            version = _version_on_disk(path)
            record.refused = Refusal(version, str(exc))
            self.metrics.model_changes.labels(name, "refused").inc()
            serving = self.registry.models.get(name)
            log.error(
                "model %s: version %s refused (%s serves on): %s",
                name,
                version,
                serving.version if serving is not None else "nothing",
                exc,
            )
            return False
        loaded_ms = (time.perf_counter() - started) * 1000
        self.registry.start(model)
        replaced = self.registry.install(model)
        record.refused = None
        self.metrics.model_changes.labels(name, "loaded").inc()
        log.info(
            "model %s %s in service (was %s), loaded and warmed beside it in %.0f ms",
            name,
            model.version,
            replaced.version if replaced is not None else "nothing",
            loaded_ms,
        )
        if replaced is not None:
            self._retire(replaced)
        return True

    async def _take_out(self, name: str, why: str) -> bool:
        removed = self.registry.remove(name)
        if removed is None:
            return False
        self.metrics.model_changes.labels(name, "unloaded").inc()
        log.info("model %s %s out of service: %s", name, removed.version, why)
        self._retire(removed)
        return True

    def _retire(self, model: LoadedModel) -> None:
        """Close ``model`` once the requests that may hold it have finished, in a task of its own: the
        drain may take up to the grace period, and no load or unload waits for it (the lock is not held)."""
        task = asyncio.get_running_loop().create_task(self._close_when_drained(model), name="retire-model")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def drain_retired(self) -> None:
        """Wait for the versions being retired to close (at shutdown)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _close_when_drained(self, model: LoadedModel) -> None:
        started = time.perf_counter()
        if not await self.work.drained(self.grace_s):
            log.warning(
                "model %s %s: requests still running after %g s; closing it",
                model.manifest.name,
                model.version,
                self.grace_s,
            )
        await model.close()
        log.info(
            "model %s %s closed after its requests finished (%.0f ms)",
            model.manifest.name,
            model.version,
            (time.perf_counter() - started) * 1000,
        )
