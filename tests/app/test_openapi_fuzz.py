"""Schemathesis against the app's own OpenAPI schema, with a bounded number of examples."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.main import create_app
from tests.conftest import service_settings

app = create_app(service_settings())  # no work at creation; schemathesis runs the lifespan once
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: schemathesis.Case[Any]) -> None:
    response = case.call()
    assert response.status_code < 500, response.text
    # A schema cannot say "exactly 28x28 pixels", so schema-valid images may rightly get 422.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    if response.status_code >= 400:
        error = response.json()["error"]
        if case.path.startswith("/v2"):  # the Open Inference Protocol's shape: {"error": "message"}
            assert isinstance(error, str)
            assert error
        else:
            assert error["status"] == response.status_code
            assert error["message"]
