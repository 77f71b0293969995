"""Liveness and readiness, kept separate: the process answering vs. models loaded and warmed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.dependencies import RegistryDep, RepositoryDep
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
async def ready(registry: RegistryDep, repository: RepositoryDep) -> JSONResponse:
    reason = repository.not_ready_reason()
    body = Readiness(
        status="ready" if reason is None else "not ready",
        models=sorted(registry.models),
        failed=repository.failed(),
        unloaded=sorted(repository.unloaded),
        reason=reason,
    )
    headers = None if reason is None else {"Retry-After": "5"}
    return JSONResponse(body.model_dump(), status_code=200 if reason is None else 503, headers=headers)
