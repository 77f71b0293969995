"""Several workers' rules on the shared decisions, with two or three services in one process sharing one state
folder (as the workers of one server do): an unload or load through one is followed by the others on their
next look, and a worker started after an unload never serves the bundle. (The same with real worker
processes, and under load: tests/app/test_model_reload.py, in the full suite.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.repository import BundleRecord, Step, next_step
from tests.conftest import MODEL, digit, png

ADMIN = "admin-key"
PNG = {"content-type": "image/png"}
AUTH = {"authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def worker(make_client: Callable[..., TestClient], tmp_path: Path) -> Callable[[], TestClient]:
    """A new worker of the same server: the shared state folder, no folder scans (the decisions alone)."""
    return lambda: make_client(admin_api_keys=ADMIN, worker_state_dir=tmp_path / "state", model_poll_s=0)


def _look(client: TestClient) -> None:
    """The worker's periodic look at the shared decisions, now."""
    assert client.portal is not None
    client.portal.call(client.app.state.repository.sync, False)  # type: ignore[attr-defined]


def _serves(client: TestClient) -> bool:
    answer = client.post("/denoise", content=png(digit(3)), headers=PNG)
    assert answer.status_code in (200, 404), answer.text
    return bool(answer.status_code == 200)


def test_an_unload_and_a_load_through_one_worker_are_followed_by_the_other(worker: Callable[[], TestClient]) -> None:
    first, second = worker(), worker()
    assert first.post(f"/v2/repository/models/{MODEL}/unload", headers=AUTH).status_code == 200
    assert not _serves(first)
    assert _serves(second)  # until its next look
    _look(second)
    assert not _serves(second)
    ready = second.get("/health/ready").json()
    assert MODEL in ready["unloaded"]
    not_ready = second.get(f"/v2/models/{MODEL}/ready")  # the protocol's "not ready" over REST
    assert not_ready.status_code == 404
    assert "unloaded" in not_ready.json()["error"]
    assert second.post(f"/v2/repository/models/{MODEL}/load", headers=AUTH).status_code == 200
    assert _serves(second)
    assert not _serves(first)
    _look(first)
    assert _serves(first)


def test_a_load_is_a_reload_in_every_worker_once_each(worker: Callable[[], TestClient]) -> None:
    first, second = worker(), worker()
    served = second.app.state.registry.models[MODEL]  # type: ignore[attr-defined]
    assert first.post(f"/v2/repository/models/{MODEL}/load", headers=AUTH).status_code == 200
    _look(second)
    reloaded = second.app.state.registry.models[MODEL]  # type: ignore[attr-defined]
    assert reloaded is not served
    _look(second)  # the same decision is not taken twice
    assert second.app.state.registry.models[MODEL] is reloaded  # type: ignore[attr-defined]
    assert _serves(second)


def test_a_worker_started_after_an_unload_never_serves_the_bundle(worker: Callable[[], TestClient]) -> None:
    first = worker()
    assert first.post(f"/v2/repository/models/{MODEL}/unload", headers=AUTH).status_code == 200
    late = worker()
    assert not _serves(late)
    assert MODEL not in late.app.state.registry.models  # type: ignore[attr-defined]
    assert MODEL in late.get("/health/ready").json()["unloaded"]


@pytest.mark.parametrize(
    ("unloaded", "loads_followed", "loads_wanted", "on_disk", "step"),
    [
        (True, 0, 0, True, Step.UNLOADED),
        (True, 0, 3, True, Step.UNLOADED),  # a load clears the unload in the shared decisions first
        (True, 0, 0, False, Step.UNLOADED),
        (False, 0, 0, False, Step.GONE),
        (False, 1, 2, False, Step.GONE),  # nothing to load from
        (False, 1, 2, True, Step.LOAD),
        (False, 2, 2, True, Step.WATCH),
        (False, 3, 2, True, Step.WATCH),  # this worker followed more than the file says: nothing to redo
    ],
)
def test_the_rule_for_one_bundle(
    unloaded: bool, loads_followed: int, loads_wanted: int, on_disk: bool, step: Step
) -> None:
    record = BundleRecord(unloaded=unloaded, loads=loads_followed)
    assert next_step(record, loads_wanted, on_disk=on_disk) is step
