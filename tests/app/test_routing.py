"""Route policies: every route declares what it needs, and metrics name routes by their template."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from app.policy import INFERENCE, PUBLIC
from app.routes import health, inference, models
from app.routing import PolicyRoute
from app.v2 import rest as v2_rest
from tests.conftest import MODEL, service_settings

ROUTERS = (inference.router, health.router, models.router, models.metrics_router, *v2_rest.routers)


def _policies() -> dict[tuple[str, str], PolicyRoute]:
    return {
        (method, route.path_format): route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, PolicyRoute)
        for method in route.methods or ()
    }


def test_every_api_route_declares_its_policy() -> None:
    routes = [route for router in ROUTERS for route in router.routes]
    assert routes
    assert all(isinstance(route, PolicyRoute) for route in routes)
    app = create_app(service_settings())
    documented = {
        (method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations
    }
    assert documented == set(_policies())  # nothing the API documents escapes a policy


def test_only_inference_is_limited_and_only_probes_are_public() -> None:
    policies = {key: route.policy for key, route in _policies().items()}
    limited = sorted(path for (_, path), policy in policies.items() if policy.limited)
    assert limited == [
        "/denoise",
        "/encode",
        "/reconstruct",
        "/v2/models/{model}/infer",
        "/v2/models/{model}/versions/{version}/infer",
    ]
    assert all(policies[("POST", path)] == INFERENCE for path in limited)
    public = sorted(path for (_, path), policy in policies.items() if policy == PUBLIC)
    assert public == ["/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"]


def test_metrics_label_requests_by_route_template(client: TestClient) -> None:
    assert client.get(f"/models/{MODEL}/samples").status_code == 200
    assert client.get(f"/v2/models/{MODEL}").status_code == 200
    assert client.get(f"/v2/models/{MODEL}/versions/1/config").status_code in (200, 404)
    assert client.get("/no/such/path").status_code == 404
    text = client.get("/metrics").text
    assert 'endpoint="/models/{name}/samples"' in text
    assert 'endpoint="/v2/models/{model}"' in text
    assert 'endpoint="/v2/models/{model}/versions/{version}/config"' in text
    assert 'endpoint="other"' in text  # the path no route matched
    assert f'endpoint="/models/{MODEL}/samples"' not in text
