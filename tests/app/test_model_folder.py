"""The model folder's rules in one worker, each scan driven by hand (no timing): a broken rollout is a
refused version, a copy still being written is loaded once, an intended unload is not "not ready",
readiness always says why it is 503, and nothing a caller names becomes a metric label."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.repository import ModelRepository
from tests.conftest import MODEL, MODELS, digit, png

ADMIN = "admin-key"
PNG = {"content-type": "image/png"}
AUTH = {"authorization": f"Bearer {ADMIN}"}


def _version(store: Path, version: str) -> Path:
    target = store / f"{MODEL}-{version}"
    shutil.copytree(MODELS / MODEL, target, ignore=shutil.ignore_patterns("report"))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def _point(models: Path, name: str, target: Path | str) -> None:
    """``models/<name> -> target`` swapped atomically, as rollouts do (``ln -sfn`` then ``mv -T``)."""
    link = models / f".{name}.new"
    link.symlink_to(target)
    os.replace(link, models / name)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    _point(tmp_path / "models", MODEL, _version(tmp_path / "store", "1.0.0"))
    return tmp_path


@pytest.fixture
def service(folder: Path, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(model_dir=folder / "models", models="", model_poll_s=0, admin_api_keys=ADMIN)


def _scan(client: TestClient) -> None:
    repository: ModelRepository = client.app.state.repository  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(repository.sync)


def _serving(client: TestClient) -> dict[str, str]:
    return {model["name"]: model["version"] for model in client.get("/models").json()["models"]}


def test_a_dangling_symlink_rollout_is_refused_and_the_old_version_serves_on(folder: Path, service: TestClient) -> None:
    _point(folder / "models", MODEL, folder / "store" / "mnist-2.0.0-typo")
    for _ in range(3):
        _scan(service)
    assert _serving(service) == {MODEL: "1.0.0"}
    refused = service.get("/models").json()["refused"][MODEL]
    assert "a symlink to nothing" in refused["reason"]
    assert service.get("/health/ready").status_code == 200
    assert service.post("/denoise", content=png(digit(1)), headers=PNG).status_code == 200
    index = service.post("/v2/repository/index").json()
    assert {entry["state"] for entry in index if entry["name"] == MODEL} == {"READY", "UNAVAILABLE"}
    # Fixing the link puts the fixed version in service.
    _point(folder / "models", MODEL, _version(folder / "store", "2.0.0"))
    for _ in range(2):
        _scan(service)
    assert _serving(service) == {MODEL: "2.0.0"}
    assert MODEL not in service.get("/models").json()["refused"]


def test_a_folder_emptied_of_its_manifest_is_refused_not_removed(folder: Path, service: TestClient) -> None:
    store = folder / "store" / "mnist-1.0.0"
    (store / "manifest.json").rename(folder / "aside.json")
    for _ in range(2):
        _scan(service)
    assert _serving(service) == {MODEL: "1.0.0"}
    assert "manifest.json: not found" in service.get("/models").json()["refused"][MODEL]["reason"]


def test_a_removed_bundle_leaves_service(folder: Path, service: TestClient) -> None:
    (folder / "models" / MODEL).unlink()
    _scan(service)
    assert _serving(service) == {}


def test_a_copy_still_being_written_is_loaded_once_when_complete(folder: Path, service: TestClient) -> None:
    other = folder / "models" / "second"
    source = _version(folder / "store", "3.0.0")
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["name"] = "second"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps(manifest))
    _scan(service)  # a manifest, no graphs yet: seen, not tried
    for path in source.iterdir():
        if path.name != "manifest.json":
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, other / path.name)
    _scan(service)  # the files changed since the last look: not yet
    assert "second" not in _serving(service)
    assert "second" not in service.get("/models").json()["refused"]
    _scan(service)  # as the last look saw them: loaded
    assert _serving(service)["second"] == "3.0.0"
    changes = service.get("/metrics").text
    assert 'denoise_model_changes_total{change="loaded",model="second"} 1.0' in changes
    assert 'change="refused",model="second"' not in changes


def test_an_intended_unload_is_not_unreadiness(service: TestClient) -> None:
    assert service.post(f"/v2/repository/models/{MODEL}/unload", headers=AUTH).status_code == 200
    ready = service.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["unloaded"] == [MODEL]
    assert ready.json()["reason"] is None
    response = service.post("/denoise", content=png(digit(1)), headers=PNG)
    assert response.status_code == 404
    assert f"POST /v2/repository/models/{MODEL}/load" in response.json()["error"]["message"]
    assert service.post(f"/v2/repository/models/{MODEL}/load", headers=AUTH).status_code == 200
    assert service.get("/health/ready").json()["unloaded"] == []


def test_a_bundle_broken_at_start_is_one_record_until_it_loads_or_is_unloaded(
    folder: Path, make_client: Callable[..., TestClient]
) -> None:
    broken = _version(folder / "store", "3.0.0")
    graph = broken / "decoder.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x00")
    _point(folder / "models", "other", _version(folder / "store", "1.1.0"))
    (folder / "models" / "other" / "manifest.json").write_text(
        (folder / "models" / "other" / "manifest.json").read_text().replace(f'"name": "{MODEL}"', '"name": "other"')
    )
    _point(folder / "models", MODEL, broken)
    service = make_client(
        model_dir=folder / "models", models="", model_poll_s=0, admin_api_keys=ADMIN, default_model="other"
    )
    ready = service.get("/health/ready")
    assert ready.status_code == 503
    assert list(ready.json()["failed"]) == [MODEL]
    assert ready.json()["reason"].startswith(f"{MODEL}: ")
    listed = service.get("/models").json()
    assert listed["failed"] == ready.json()["failed"]  # one record, one answer whichever route asks
    assert listed["refused"][MODEL]["version"] == "3.0.0"
    index = {entry["name"]: entry for entry in service.post("/v2/repository/index").json()}
    assert index[MODEL]["state"] == "UNAVAILABLE"
    assert "refused" in index[MODEL]["reason"]
    missing = service.post(f"/denoise?model={MODEL}", content=png(digit(1)), headers=PNG)
    assert missing.status_code == 404
    # taken out on purpose: no longer counted against readiness (as an unload of a served bundle)
    assert service.post(f"/v2/repository/models/{MODEL}/unload", headers=AUTH).status_code == 200
    assert service.get("/health/ready").status_code == 200
    # mended and loaded: served, and nothing is left of the failure
    _point(folder / "models", MODEL, _version(folder / "store", "3.0.1"))
    assert service.post(f"/v2/repository/models/{MODEL}/load", headers=AUTH).status_code == 200
    ready = service.get("/health/ready").json()
    assert (ready["failed"], ready["unloaded"], ready["reason"]) == ({}, [], None)
    assert service.get("/models").json()["refused"] == {}
    assert _serving(service)[MODEL] == "3.0.1"


def test_readiness_says_why_whenever_it_is_503(tmp_path: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(model_dir=tmp_path / "absent", models="")
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert "no model bundles found" in ready.json()["reason"]
    denoise = client.post("/denoise", content=png(digit(1)), headers=PNG)
    assert denoise.status_code == 503
    assert "no model bundles found" in denoise.json()["error"]["message"]


@pytest.mark.parametrize("name", ['mnist\n{"x":1}', "mn\x00ist", "m" * 10_000, "mnist-nothing"])
def test_names_nobody_serves_become_no_metric_label(service: TestClient, name: str) -> None:
    for action in ("load", "unload"):
        response = service.post(f"/v2/repository/models/{quote(name, safe='')}/{action}", headers=AUTH)
        assert response.status_code in (404, 400), response.text
        assert len(response.json()["error"]) < 400
    metrics = service.get("/metrics").text
    labels = set(re.findall(r'model="([^"]*)"', metrics))
    assert labels <= {MODEL, "", "-"}, labels


def test_refusal_reasons_name_no_server_path(folder: Path, service: TestClient) -> None:
    broken = _version(folder / "store", "4.0.0")
    graph = broken / "encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x00")
    _point(folder / "models", MODEL, broken)
    for _ in range(2):
        _scan(service)
    for text in (json.dumps(service.post("/v2/repository/index").json()), service.get("/models").text):
        assert str(folder) not in text
        assert not re.search("[0-9a-f]{64}", text)
    response = service.post("/v2/repository/models/nothing/load", headers=AUTH)
    assert response.status_code == 404
    assert str(folder) not in response.text
