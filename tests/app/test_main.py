"""The app as API users see it: its OpenAPI description."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_openapi_description_is_written_for_api_users(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    description = response.json()["info"]["description"]
    assert "Pillow" not in description  # no module docstrings for developers
    assert "imports" not in description
    assert "POST /denoise" in description
    assert "Input normalisation" in description
    assert "reinvert=true" in description
    assert "request_id" in description
