"""Route policies: every route declares what it needs, and metrics name routes by their template."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.testclient import TestClient

from app.main import create_app
from app.policy import INFERENCE, PUBLIC
from app.routes import health, inference, models
from app.routing import PolicyRoute, _request_only
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


def test_every_route_of_the_app_goes_through_a_policy_route() -> None:
    """Routes outside the API's routers too (the docs pages, the demo's redirect): any route FastAPI
    dispatches is a PolicyRoute; only the OpenAPI document and static mounts are Starlette's own."""
    from fastapi.routing import APIRoute
    from starlette.routing import Mount, Route

    def walk(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's wrapper of an included router
            yield from walk(included.routes) if included is not None else (route,)

    app = create_app(service_settings())
    seen = list(walk(app.routes))
    assert {"/docs", "/redoc", "/"} <= {getattr(route, "path", "") for route in seen}
    for route in seen:
        if isinstance(route, APIRoute):
            assert isinstance(route, PolicyRoute), route.path
        else:
            assert isinstance(route, Mount) or (isinstance(route, Route) and route.path == app.openapi_url), route


def test_every_grpc_method_of_the_service_declares_its_policy() -> None:
    from tritonclient.grpc import service_pb2

    from app.v2.grpc_interceptor import POLICIES

    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert set(POLICIES) == {method.name for method in service.methods}
    assert POLICIES["ModelInfer"] == INFERENCE
    assert sorted(name for name, policy in POLICIES.items() if policy == PUBLIC) == ["ServerLive", "ServerReady"]


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


async def _request_only_endpoint(request: Request) -> Response:
    return Response()


async def _with_a_parameter(request: Request, model: str) -> Response:
    return Response()


async def _returning_a_dict(request: Request) -> dict[str, str]:
    return {}


def _returning_sync(request: Request) -> Response:
    return Response()


def test_only_endpoints_taking_the_request_alone_and_returning_a_response_skip_fastapis_handler() -> None:
    assert _request_only(_request_only_endpoint)
    assert not _request_only(_with_a_parameter)
    assert not _request_only(_returning_a_dict)
    assert not _request_only(_returning_sync)
    direct = {path for (_, path), route in _policies().items() if _request_only(route.endpoint)}
    inference = {"/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"}
    assert {"/denoise", "/encode", "/reconstruct", *inference} <= direct  # V2's reads its path parameters itself
    assert not any(path.startswith("/v2") for path in direct - inference)  # path parameters: FastAPI's handler
