"""The loaded model bundles, and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.dependencies import RegistryDep, SettingsDep
from app.metrics import Metrics
from app.schemas import ModelInfo, ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/models", summary="Loaded bundles with their manifest summary and execution provider")
async def list_models(registry: RegistryDep, settings: SettingsDep) -> ModelsResponse:
    return ModelsResponse(
        default_model=settings.default_model,
        models=[ModelInfo.model_validate(model.summary()) for model in registry],
        failed=registry.failures,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, tags=["health"])
async def metrics(request: Request) -> Response:
    collected: Metrics = request.app.state.metrics
    return Response(collected.exposition(), media_type=CONTENT_TYPE_LATEST)
