"""Access control: API keys on every route but health and docs, and CORS for browser callers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.auth import ApiKeys
from app.errors import Unauthorized
from tests.conftest import digit, png

KEY = "s3cret-key-1"
OTHER = "another-key-2"
PNG = {"content-type": "image/png"}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def guarded(make_client: Any) -> TestClient:
    client: TestClient = make_client(api_keys=f"{KEY}, {OTHER}")
    return client


def assert_unauthorized(response: Any, fragment: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer realm="denoise"'
    error = response.json()["error"]
    if isinstance(error, str):  # the Open Inference Protocol's shape, under /v2
        assert fragment in error
        return
    assert error["code"] == "unauthorized"
    assert fragment in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/denoise"),
        ("POST", "/encode"),
        ("POST", "/reconstruct"),
        ("GET", "/models"),
        ("GET", "/models/mnist/samples"),
        ("GET", "/v2"),
        ("GET", "/v2/models/mnist"),
        ("POST", "/v2/models/mnist/infer"),
        ("POST", "/v2/models/mnist/versions/1/infer"),
        ("POST", "/v2/repository/index"),
    ],
)
def test_protected_routes_need_a_key(guarded: TestClient, method: str, path: str) -> None:
    assert_unauthorized(guarded.request(method, path, content=png(digit(1)), headers=PNG), "missing API key")


def test_a_path_with_no_route_is_not_found_with_or_without_a_key(guarded: TestClient) -> None:
    """The key decision is the matched route's; where no route matches there is nothing to protect."""
    for headers in ({}, {"authorization": f"Bearer {KEY}"}):
        response = guarded.get("/nowhere", headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (f"Bearer {KEY}x", "invalid API key"),
        ("Bearer wrong", "invalid API key"),
        (f"Basic {KEY}", "must read 'Bearer <key>'"),
        ("Bearer", "must read 'Bearer <key>'"),
        ("Bearer    ", "must read 'Bearer <key>'"),
    ],
    ids=["key-plus-char", "wrong-key", "other-scheme", "no-key", "blank-key"],
)
def test_wrong_key_is_401(guarded: TestClient, header: str, fragment: str) -> None:
    response = guarded.post("/denoise", content=png(digit(1)), headers={**PNG, "authorization": header})
    assert_unauthorized(response, fragment)


@pytest.mark.parametrize("key", [KEY, OTHER])
def test_right_key_is_served(guarded: TestClient, key: str) -> None:
    response = guarded.post("/denoise", content=png(digit(1)), headers={**PNG, **bearer(key)})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert guarded.get("/models", headers={"authorization": f"bearer {key}"}).status_code == 200  # scheme any case


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/docs", "/openapi.json", "/metrics"])
def test_health_docs_and_metrics_need_no_key(guarded: TestClient, path: str) -> None:
    assert guarded.get(path).status_code == 200


def test_metrics_can_require_the_key(make_client: Any) -> None:
    client = make_client(api_keys=KEY, metrics_need_key=True)
    assert_unauthorized(client.get("/metrics"), "missing API key")
    assert client.get("/metrics", headers=bearer(KEY)).status_code == 200
    assert client.get("/health/ready").status_code == 200


def test_keys_from_a_file(make_client: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# one key per line\nfile-key-a\n\n  file-key-b  \n")
    client = make_client(api_keys_file=keys)
    assert client.get("/models", headers=bearer("file-key-b")).status_code == 200
    assert client.get("/models", headers=bearer("# one key per line")).status_code == 401


def test_no_keys_means_open(client: TestClient) -> None:
    assert client.post("/denoise", content=png(digit(1)), headers=PNG).status_code == 200


def test_keys_never_appear_in_logs_or_errors(guarded: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        wrong = guarded.get("/models", headers=bearer("guessed-key"))
        right = guarded.get("/models", headers=bearer(KEY))
        guarded.get("/openapi.json")
    assert right.status_code == 200
    assert "guessed-key" not in wrong.text
    for text in (caplog.text, right.text, repr(guarded.app.state.settings)):  # type: ignore[attr-defined]
        assert KEY not in text
        assert "guessed-key" not in text


def test_openapi_declares_the_bearer_scheme(guarded: TestClient) -> None:
    schema = guarded.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"]["/denoise"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in schema["paths"]["/health/ready"]["get"]


def test_checker_compares_every_key() -> None:
    keys = ApiKeys(["a", "b", "c"])
    keys.check("Bearer c")
    with pytest.raises(Unauthorized):
        keys.check("Bearer d")
    assert not ApiKeys([]).required("key")
    assert keys.required("key")
    assert not keys.required("public")
    assert not keys.required("metrics")
    assert ApiKeys(["a"], protect_metrics=True).required("metrics")


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.options(
        "/denoise", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_allow_list(make_client: Any) -> None:
    client = make_client(cors_origins="https://app.example", api_keys=KEY)
    preflight = client.options(
        "/denoise",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200  # answered without a key
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    denied = client.options(
        "/denoise", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers
    response = client.post(
        "/denoise", content=png(digit(1)), headers={**PNG, **bearer(KEY), "Origin": "https://app.example"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
    assert "x-anomaly-score" in response.headers["access-control-expose-headers"].lower()
    unauthorized = client.post("/denoise", content=b"", headers={**PNG, "Origin": "https://app.example"})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == "https://app.example"  # the browser can read why
