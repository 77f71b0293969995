"""The fast lane: a POST to an image route or a V2 infer route with no query string skips FastAPI's
parameter layer and answers exactly what FastAPI would have answered (the same request with a query
string goes through FastAPI)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.dependencies import get_settings
from app.main import create_app
from app.runtime.registry import LoadedModel
from tests.app.test_v2_rest import INFER, ONE_IMAGE, bad_requests, binary_request, infer_json
from tests.conftest import MODEL, digit, png, service_settings

PNG = {"content-type": "image/png"}
SAME_ID = {"x-request-id": "fastlane-test"}

#: Any query string sends a request through FastAPI instead; FastAPI ignores a parameter the route
#: does not declare.
THROUGH_FASTAPI = "?via=fastapi"


def _latents(client: TestClient) -> bytes:
    response: httpx.Response = client.post("/encode", content=png(digit(5)), headers=PNG)
    return response.content


REQUESTS: dict[str, Callable[[TestClient], dict[str, Any]]] = {
    "denoise one png": lambda c: {"url": "/denoise", "content": png(digit(1)), "headers": PNG},
    "denoise octet-stream": lambda c: {
        "url": "/denoise",
        "content": png(digit(2)),
        "headers": {"content-type": "application/octet-stream"},
    },
    "denoise as json": lambda c: {
        "url": "/denoise",
        "content": png(digit(3)),
        "headers": {**PNG, "accept": "application/json"},
    },
    "denoise multipart batch": lambda c: {
        "url": "/denoise",
        "files": [("file", (f"{i}.png", png(digit(i)), "image/png")) for i in range(3)],
    },
    "encode": lambda c: {"url": "/encode", "content": png(digit(4)), "headers": PNG},
    "reconstruct image": lambda c: {"url": "/reconstruct", "content": png(digit(6)), "headers": PNG},
    "reconstruct latents": lambda c: {
        "url": "/reconstruct",
        "content": _latents(c),
        "headers": {"content-type": "application/json"},
    },
    # Bad input: every error is rendered by the same handlers, in the same shape.
    "undecodable": lambda c: {"url": "/denoise", "content": b"not a png", "headers": PNG},
    "wrong size": lambda c: {"url": "/denoise", "content": png(digit(1)[:20]), "headers": PNG},
    "wrong media type": lambda c: {"url": "/denoise", "content": b"x", "headers": {"content-type": "text/plain"}},
    "no media type": lambda c: {"url": "/encode", "content": png(digit(1))},
    "empty body": lambda c: {"url": "/denoise", "content": b"", "headers": PNG},
    "multipart without file": lambda c: {"url": "/denoise", "data": {"name": "x"}, "files": {"other": b"x"}},
    "bad latents json": lambda c: {
        "url": "/reconstruct",
        "content": b"{",
        "headers": {"content-type": "application/json"},
    },
    "latents of the wrong shape": lambda c: {
        "url": "/reconstruct",
        "content": json.dumps({"latents": [[0.0, 1.0]]}).encode(),
        "headers": {"content-type": "application/json"},
    },
}


def _v2_requests() -> dict[str, Callable[[TestClient], dict[str, Any]]]:
    png_json = {"inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "data": [_b64(png(digit(8)))]}]}
    blob = ONE_IMAGE.tobytes()
    size = {"binary_data_size": len(blob)}
    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1], "parameters": size}
    body, headers = binary_request({"inputs": [tensor]}, blob)
    requests: dict[str, Callable[[TestClient], dict[str, Any]]] = {
        "v2 png as json": lambda c: {"url": f"/v2/models/{MODEL}/infer", "content": json.dumps(png_json).encode()},
        "v2 tensor as json": lambda c: {"url": INFER, "content": json.dumps(infer_json()).encode()},
        "v2 binary tensor": lambda c: {"url": INFER, "content": body, "headers": headers},
        "v2 named version": lambda c: {
            "url": f"/v2/models/{MODEL}/versions/{_version(c)}/infer",
            "content": json.dumps(png_json).encode(),
        },
        "v2 unknown model": lambda c: {"url": "/v2/models/nope/infer", "content": json.dumps(png_json).encode()},
        "v2 unknown version": lambda c: {
            "url": f"/v2/models/{MODEL}/versions/999/infer",
            "content": json.dumps(png_json).encode(),
        },
    }
    for what, path, build, _, _ in bad_requests():
        requests[f"v2 {what}"] = _replay(path, build)
    return requests


def _replay(path: str, build: Callable[[], tuple[bytes, dict[str, str]]]) -> Callable[[TestClient], dict[str, Any]]:
    def request(client: TestClient) -> dict[str, Any]:
        content, headers = build()
        return {"url": path, "content": content, "headers": headers}

    return request


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _version(client: TestClient) -> str:
    response: httpx.Response = client.get(f"/v2/models/{MODEL}")
    return str(response.json()["versions"][0])


REQUESTS.update(_v2_requests())


def _post(client: TestClient, suffix: str, request: dict[str, Any]) -> httpx.Response:
    request = dict(request)
    headers = {**request.pop("headers", {}), **SAME_ID}
    response: httpx.Response = client.post(request.pop("url") + suffix, headers=headers, **request)
    return response


def _comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in response.headers.items() if k not in ("date", "server"))
    return response.status_code, headers, response.content


@pytest.mark.parametrize("name", REQUESTS)
def test_fast_lane_answers_what_fastapi_answers(client: TestClient, name: str) -> None:
    request = REQUESTS[name](client)
    fast = _post(client, "", request)
    slow = _post(client, THROUGH_FASTAPI, request)
    assert fast.status_code == slow.status_code
    assert _comparable(fast) == _comparable(slow)


@pytest.fixture
def settings_resolved(client: TestClient) -> Iterator[list[int]]:
    """How many times FastAPI resolved the settings dependency: once per request it handled itself."""
    app: Any = client.app
    calls: list[int] = []
    settings = app.state.settings

    def counted() -> object:
        calls.append(1)
        return settings

    app.dependency_overrides[get_settings] = counted
    yield calls
    app.dependency_overrides.clear()


@pytest.mark.parametrize(
    "name", ["denoise one png", "encode", "reconstruct image", "v2 png as json", "v2 named version"]
)
def test_no_query_string_skips_fastapi_and_a_query_string_does_not(
    client: TestClient, settings_resolved: list[int], name: str
) -> None:
    request = REQUESTS[name](client)
    assert _post(client, "", request).status_code == 200
    assert settings_resolved == []
    assert _post(client, THROUGH_FASTAPI, request).status_code == 200
    assert settings_resolved == [1]


def test_query_parameters_still_apply_and_are_validated(client: TestClient) -> None:
    image = png(digit(7))
    plain = client.post("/denoise", content=image, headers=PNG)
    inverted = client.post("/denoise?reinvert=true", content=image, headers=PNG)
    assert plain.status_code == inverted.status_code == 200
    assert plain.content != inverted.content
    bad = client.post("/denoise?resize=perhaps", content=image, headers=PNG)
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_parameter"


def test_other_methods_and_paths_are_untouched(client: TestClient) -> None:
    assert client.get("/denoise").status_code == 405
    redirect = client.post("/denoise/", content=png(digit(1)), headers=PNG, follow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["location"].endswith("/denoise")
    assert client.get("/health/live").status_code == 200


def test_unexpected_error_is_the_same_500_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: LoadedModel, graph: str, inputs: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(LoadedModel, "infer", broken)
    with TestClient(create_app(service_settings()), raise_server_exceptions=False) as client:
        fast = client.post("/denoise", content=png(digit(1)), headers={**PNG, **SAME_ID})
        slow = client.post("/denoise" + THROUGH_FASTAPI, content=png(digit(1)), headers={**PNG, **SAME_ID})
    assert fast.status_code == slow.status_code == 500
    assert fast.json() == slow.json()
    assert fast.json()["error"]["code"] == "internal_error"


def test_no_model_loaded_is_the_same_503_either_way(make_client: Callable[..., TestClient]) -> None:
    client = make_client(models="does-not-exist", default_model="does-not-exist")
    fast = client.post("/denoise", content=png(digit(1)), headers={**PNG, **SAME_ID})
    slow = client.post("/denoise" + THROUGH_FASTAPI, content=png(digit(1)), headers={**PNG, **SAME_ID})
    assert fast.status_code == slow.status_code == 503
    assert _comparable(fast) == _comparable(slow)
