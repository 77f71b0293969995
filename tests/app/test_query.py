"""The query of the routes that read images: one validation, FastAPI's error shape, documented parameters."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.app.test_errors import assert_error
from tests.images import digit, png

PNG = {"content-type": "image/png"}


@pytest.mark.parametrize(
    ("route", "query", "named"),
    [
        ("/denoise", "resize=maybe", "resize"),
        ("/denoise", "reinvert=2", "reinvert"),
        ("/encode", "invert=nope", "invert"),
        ("/reconstruct", "model=" + "m" * 65, "model"),
        ("/denoise", "resize=true&resize=sometimes", "resize"),  # a repeated name: its last value
    ],
)
def test_a_bad_query_value_is_a_422_naming_the_parameter(
    client: TestClient, route: str, query: str, named: str
) -> None:
    response = client.post(f"{route}?{query}", content=png(digit(8)), headers=PNG)
    error = assert_error(response, 422, "invalid_parameter")
    assert named in error["message"]


def test_accepted_spellings_and_unknown_names(client: TestClient) -> None:
    for query in ("resize=1&invert=no", "resize=yes&reinvert=off&unknown=3", "model=mnist&invert=false"):
        response = client.post(f"/denoise?{query}", content=png(digit(8)), headers=PNG)
        assert response.status_code == 200, (query, response.text)
        assert response.headers["content-type"] == "image/png"
    response = client.post("/denoise?model=nonesuch", content=png(digit(8)), headers=PNG)
    assert_error(response, 404, "model_not_found")


def test_the_query_parameters_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    documented = {
        path: [p["name"] for p in paths[path]["post"]["parameters"]] for path in ("/denoise", "/encode", "/reconstruct")
    }
    assert documented == {
        "/denoise": ["model", "resize", "invert", "reinvert"],
        "/encode": ["model", "resize", "invert"],
        "/reconstruct": ["model", "resize", "invert", "reinvert"],
    }
    model = paths["/denoise"]["post"]["parameters"][0]
    assert (model["in"], model["required"], model["description"]) == (
        "query",
        False,
        "model name (default: DENOISE_DEFAULT_MODEL)",
    )
    assert {"type": "string", "maxLength": 64} in model["schema"]["anyOf"]
