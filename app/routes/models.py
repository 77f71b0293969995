"""The loaded model bundles, and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.dependencies import RegistryDep, RepositoryDep, SettingsDep, resolve_model
from app.errors import ModelNotFound
from app.metrics import Metrics
from app.policy import KEYED, METRICS
from app.routing import policy_route
from app.schemas import (
    ErrorResponse,
    ModelInfo,
    ModelsResponse,
    RefusedVersion,
    Sample,
    SamplesResponse,
    WorkerModels,
)

router = APIRouter(tags=["models"], route_class=policy_route(KEYED))
metrics_router = APIRouter(tags=["health"], route_class=policy_route(METRICS))


@router.get(
    "/models",
    summary="Bundles in service with their manifest summary and execution provider; versions refused; every worker's",
)
async def list_models(registry: RegistryDep, repository: RepositoryDep, settings: SettingsDep) -> ModelsResponse:
    return ModelsResponse(
        default_model=settings.default_model,
        models=[ModelInfo.model_validate(model.summary()) for model in registry],
        failed=repository.failed(),
        refused={name: RefusedVersion(**refusal.summary()) for name, refusal in repository.refused.items()},
        workers=[WorkerModels.model_validate(worker) for worker in repository.workers()],
    )


@router.get(
    "/models/{name}/samples",
    summary="Clean test images shipped with a bundle, to try the model on",
    responses={404: {"model": ErrorResponse, "description": "no such model, or it ships no samples"}},
)
async def samples(name: str, request: Request) -> SamplesResponse:
    model = resolve_model(request, name)
    if model.samples_problem is not None:
        raise ModelNotFound(f"model {model.manifest.name!r} {model.samples_problem}")
    return SamplesResponse(
        model=model.manifest.name, version=model.manifest.version, samples=[Sample(**item) for item in model.samples]
    )


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    collected: Metrics = request.app.state.metrics
    return Response(collected.exposition(), media_type=CONTENT_TYPE_LATEST)
