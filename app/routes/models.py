"""The loaded model bundles, and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.dependencies import RegistryDep, SettingsDep, resolve_model
from app.metrics import Metrics
from app.policy import KEYED, METRICS
from app.routing import policy_route
from app.schemas import ErrorResponse, ModelInfo, ModelsResponse, Sample, SamplesResponse

router = APIRouter(tags=["models"], route_class=policy_route(KEYED))
metrics_router = APIRouter(tags=["health"], route_class=policy_route(METRICS))


@router.get("/models", summary="Loaded bundles with their manifest summary and execution provider")
async def list_models(registry: RegistryDep, settings: SettingsDep) -> ModelsResponse:
    return ModelsResponse(
        default_model=settings.default_model,
        models=[ModelInfo.model_validate(model.summary()) for model in registry],
        failed=registry.failures,
    )


@router.get(
    "/models/{name}/samples",
    summary="Clean test images shipped with a bundle, to try the model on",
    responses={404: {"model": ErrorResponse, "description": "no such model, or it ships no samples"}},
)
async def samples(name: str, request: Request, registry: RegistryDep) -> SamplesResponse:
    model = resolve_model(request, registry, name)
    return SamplesResponse(
        model=model.manifest.name, version=model.manifest.version, samples=[Sample(**item) for item in model.samples()]
    )


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    collected: Metrics = request.app.state.metrics
    return Response(collected.exposition(), media_type=CONTENT_TYPE_LATEST)
