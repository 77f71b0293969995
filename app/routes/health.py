"""Liveness and readiness, kept separate: the process answering vs. models loaded and warmed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.dependencies import RegistryDep
from app.policy import PUBLIC
from app.routing import policy_route
from app.schemas import Liveness, Readiness

router = APIRouter(prefix="/health", tags=["health"], route_class=policy_route(PUBLIC))


@router.get("/live", summary="The process is up and its event loop answers")
async def live() -> Liveness:
    return Liveness()


@router.get(
    "/ready",
    summary="Every configured model is loaded and warmed",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: loading, or a model failed (see `failed`)"}},
)
async def ready(registry: RegistryDep) -> JSONResponse:
    body = Readiness(
        status="ready" if registry.ready else "not ready",
        models=sorted(registry.models),
        failed=registry.failures,
        unloaded=sorted(registry.unloaded),
        reason=registry.not_ready_reason(),
    )
    headers = None if registry.ready else {"Retry-After": "5"}
    return JSONResponse(body.model_dump(), status_code=200 if registry.ready else 503, headers=headers)
