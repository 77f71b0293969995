"""The V2 repository API's rules, in one worker: who may load and unload, what a load may carry, the
index and its ``ready`` filter, the version routes, and the version on every answer and access line.
(Swaps under load, several workers and tritonclient: tests/app/test_model_reload.py.)"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import MODEL, MODELS, digit, png

USER, ADMIN = "user-key", "admin-key"
VERSION = json.loads((MODELS / MODEL / "manifest.json").read_text())["version"]
PNG = {"content-type": "image/png"}


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=USER, admin_api_keys=ADMIN)


@pytest.mark.parametrize("action", ["load", "unload"])
def test_without_admin_keys_model_control_is_refused_with_403(
    make_client: Callable[..., TestClient], action: str
) -> None:
    client = make_client(api_keys=USER)
    for headers in ({}, _auth(USER), _auth("anything")):
        response = client.post(f"/v2/repository/models/{MODEL}/{action}", headers=headers)
        assert response.status_code == 403
        assert "DENOISE_ADMIN_API_KEYS" in response.json()["error"]
    assert client.post("/denoise", content=png(digit(1)), headers={**PNG, **_auth(USER)}).status_code == 200


@pytest.mark.parametrize("action", ["load", "unload"])
def test_model_control_needs_an_admin_key(keyed: TestClient, action: str) -> None:
    missing = keyed.post(f"/v2/repository/models/{MODEL}/{action}")
    assert missing.status_code == 401
    assert "www-authenticate" in missing.headers
    ordinary = keyed.post(f"/v2/repository/models/{MODEL}/{action}", headers=_auth(USER))
    assert ordinary.status_code == 403
    assert "admin key" in ordinary.json()["error"]
    wrong = keyed.post(f"/v2/repository/models/{MODEL}/{action}", headers=_auth("guess"))
    assert wrong.status_code == 401
    assert keyed.post(f"/v2/repository/models/{MODEL}/load", headers=_auth(ADMIN)).status_code == 200


def test_unload_then_load_back(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="denoise.access")
    assert keyed.post(f"/v2/repository/models/{MODEL}-encoder/unload", headers=_auth(ADMIN)).status_code == 200
    gone = keyed.post("/denoise", content=png(digit(2)), headers={**PNG, **_auth(USER)})
    assert gone.status_code == 404  # unloaded on purpose: says how to load it back
    assert "was unloaded through the repository API" in gone.json()["error"]["message"]
    ready = keyed.get("/health/ready")  # an intended unload is not unreadiness (Triton's explicit mode)
    assert ready.status_code == 200
    assert ready.json()["unloaded"] == [MODEL]
    v2_gone = keyed.get(f"/v2/models/{MODEL}-decoder", headers=_auth(USER))
    assert v2_gone.status_code == 404
    assert "error" in v2_gone.json()
    index = keyed.post("/v2/repository/index", headers=_auth(USER)).json()
    assert {entry["state"] for entry in index} == {"UNAVAILABLE"}
    assert all("unloaded" in entry["reason"] for entry in index)
    assert keyed.post(f"/v2/repository/models/{MODEL}/load", headers=_auth(ADMIN)).status_code == 200
    assert keyed.get("/health/ready").status_code == 200
    served = keyed.post("/denoise", content=png(digit(2)), headers={**PNG, **_auth(USER)})
    assert served.status_code == 200
    assert served.headers["x-model-version"] == VERSION
    line = next(r for r in caplog.records if getattr(r, "request_id", None) == served.headers["x-request-id"])
    assert line.__dict__["version"] == VERSION
    controls = [r.__dict__ for r in caplog.records if "/v2/repository/models/" in r.__dict__.get("path", "")]
    assert {(c["path"].rsplit("/", 1)[1], c["status"]) for c in controls} == {("unload", 200), ("load", 200)}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"parameters": {"config": "{}"}}, 400, "DENOISE_MODEL_DIR"),
        ({"parameters": {"file:1/model.onnx": "AAAA"}}, 400, "not supported"),
        ("[1, 2]", 400, "object"),
        ("{not json", 400, "JSON"),
        ({"parameters": "yes"}, 400, "'parameters'"),
    ],
)
def test_a_load_carries_no_overrides_and_bad_bodies_are_400(
    keyed: TestClient, body: Any, status: int, says: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = keyed.post(f"/v2/repository/models/{MODEL}/load", content=content, headers=_auth(ADMIN))
    assert response.status_code == status
    assert says in response.json()["error"]


def test_unknown_bundles_are_404(keyed: TestClient) -> None:
    for action in ("load", "unload"):
        response = keyed.post(f"/v2/repository/models/nope/{action}", headers=_auth(ADMIN))
        assert response.status_code == 404
        assert "no bundle named 'nope'" in response.json()["error"]


def test_index_ready_filter(keyed: TestClient) -> None:
    ready = keyed.post("/v2/repository/index", json={"ready": True}, headers=_auth(USER))
    assert ready.status_code == 200
    assert {(e["name"], e["version"], e["state"]) for e in ready.json()} == {
        (name, VERSION, "READY") for name in (MODEL, f"{MODEL}-autoencoder", f"{MODEL}-encoder", f"{MODEL}-decoder")
    }
    bad = keyed.post("/v2/repository/index", json={"ready": "yes"}, headers=_auth(USER))
    assert bad.status_code == 400
    assert keyed.post("/v2/repository/index").status_code == 401


def test_version_routes_answer_for_the_version_loaded_only(keyed: TestClient) -> None:
    headers = _auth(USER)
    assert keyed.get(f"/v2/models/{MODEL}/versions/{VERSION}", headers=headers).json()["versions"] == [VERSION]
    assert keyed.get(f"/v2/models/{MODEL}/versions/{VERSION}/ready", headers=headers).status_code == 200
    other = keyed.get(f"/v2/models/{MODEL}/versions/0.0.1", headers=headers)
    assert other.status_code == 404
    assert "version '0.0.1'" in other.json()["error"]
    assert keyed.get(f"/v2/models/{MODEL}/versions/0.0.1/ready", headers=headers).status_code == 404
    request = {"inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "data": [_b64(png(digit(3)))]}]}
    inferred = keyed.post(f"/v2/models/{MODEL}/versions/{VERSION}/infer", json=request, headers=headers)
    assert inferred.status_code == 200
    assert inferred.json()["model_version"] == VERSION
    assert keyed.post(f"/v2/models/{MODEL}/versions/0.0.1/infer", json=request, headers=headers).status_code == 404


@pytest.mark.parametrize("suffix", ["", "/ready", "/config"])
def test_a_version_comes_from_the_path_alone(keyed: TestClient, suffix: str) -> None:
    # The protocol names a version in the path; a version query parameter is no parameter of it.
    headers = _auth(USER)
    unversioned = keyed.get(f"/v2/models/{MODEL}{suffix}", params={"version": "0.0.1"}, headers=headers)
    assert unversioned.status_code == 200
    assert keyed.get(f"/v2/models/{MODEL}/versions/0.0.1{suffix}", headers=headers).status_code == 404
    paths = keyed.get("/openapi.json").json()["paths"]
    unversioned_parameters = paths[f"/v2/models/{{model}}{suffix}"]["get"]["parameters"]
    assert {p["name"]: p["in"] for p in unversioned_parameters} == {"model": "path"}
    versioned = paths[f"/v2/models/{{model}}/versions/{{version}}{suffix}"]["get"]["parameters"]
    assert {p["name"]: (p["in"], p["required"]) for p in versioned} == {
        "model": ("path", True),
        "version": ("path", True),
    }


def test_models_shows_this_worker_and_nothing_refused(keyed: TestClient) -> None:
    body = keyed.get("/models", headers=_auth(USER)).json()
    assert body["refused"] == {}
    (worker,) = body["workers"]
    assert worker["models"] == {MODEL: VERSION}


def test_admin_routes_are_documented_with_their_key(keyed: TestClient, client: TestClient) -> None:
    paths = keyed.get("/openapi.json").json()["paths"]
    assert paths["/v2/repository/models/{model}/load"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in client.get("/openapi.json").json()["paths"]["/v2/repository/models/{model}/load"]["post"]


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
