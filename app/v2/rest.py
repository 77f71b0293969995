"""``/v2``: the Open Inference Protocol over REST, with Triton's binary data, model configuration
and model repository (index, load and unload) extensions. Errors are ``{"error": "..."}``.

Bodies are read as bytes whatever their ``Content-Type`` (Triton's sync client sends none, its
asyncio client ``application/octet-stream`` even for JSON); ``Content-Encoding: gzip`` or
``deflate`` request bodies are inflated up to the body-size limit.
"""

from __future__ import annotations

import zlib
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.config import Settings
from app.context import RequestContext
from app.policy import ADMIN, INFERENCE, KEYED, PUBLIC
from app.routing import policy_route, request_context
from app.v2.dataplane import DataPlane
from app.v2.tensors import DTYPES, V2Error, parse_infer_request, parse_json, response_body, split_body


class ErrorBody(BaseModel):
    """The Open Inference Protocol's error shape."""

    error: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


_MODEL_ERRORS = _errors(401, 404)
#: A V2 model name, with the examples the docs (and schema-driven fuzzers) start from.
_MODEL_PARAMETER: dict[str, Any] = {
    "description": "a V2 model: a bundle, or one of its graphs",
    "examples": ["mnist", "mnist-encoder"],
}
ModelPath = Annotated[str, Path(**_MODEL_PARAMETER)]
#: A version path parameter as the schema shows it. Routes read it from the path themselves
#: (:func:`_path_version`), and document it with ``_VERSIONED``.
_VERSION_PARAMETER: dict[str, Any] = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the model's version (its bundle's)",
}
_VERSIONED: dict[str, Any] = {"openapi_extra": {"parameters": [_VERSION_PARAMETER]}}


def _path_version(request: Request) -> str | None:
    """The version the route's path names; None on an unversioned path (the protocol has no version query
    parameter: a ``?version=`` there is ignored, as any other unknown query parameter)."""
    version: str | None = request.path_params.get("version")
    return version


VersionDep = Annotated[str | None, Depends(_path_version)]


class ServerLive(BaseModel):
    """The Open Inference Protocol's server liveness response."""

    live: bool


class ServerReady(BaseModel):
    """The Open Inference Protocol's server readiness response (503 when not ready)."""

    ready: bool


class ModelReady(BaseModel):
    """The Open Inference Protocol's model readiness response (a 4xx, 404, when the model is not ready)."""

    name: str
    ready: bool


_TAGS: list[str | Enum] = ["open inference protocol (v2)"]
#: The protocol's probes, public; everything else needs a key where keys are set; inference is limited.
health_router = APIRouter(prefix="/v2", tags=_TAGS, route_class=policy_route(PUBLIC))
router = APIRouter(prefix="/v2", tags=_TAGS, responses=_errors(401), route_class=policy_route(KEYED))
infer_router = APIRouter(prefix="/v2", tags=_TAGS, responses=_errors(401), route_class=policy_route(INFERENCE))
admin_router = APIRouter(prefix="/v2", tags=_TAGS, route_class=policy_route(ADMIN))
#: In the order a request is matched against them: inference first, as the service's own routes are.
routers = (infer_router, health_router, router, admin_router)

HEADER_LENGTH = "inference-header-content-length"


async def get_dataplane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.v2
    return plane


async def get_context(request: Request) -> RequestContext:
    return request_context(request)


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
ContextDep = Annotated[RequestContext, Depends(get_context)]


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise V2Error(f"Content-Encoding {encoding!r} not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise V2Error(f"body is not valid {encoding} data: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise V2Error(f"inflated body exceeds {limit} bytes (DENOISE_MAX_BODY_BYTES)", 413)
    return data


@router.get("", summary="Server metadata")
async def metadata(plane: DataPlaneDep) -> dict[str, Any]:
    return plane.metadata()


@health_router.get("/health/live", summary="Server liveness")
async def live(plane: DataPlaneDep) -> ServerLive:
    return ServerLive(live=plane.live())


@health_router.get(
    "/health/ready",
    summary="Server readiness",
    responses={503: {"model": ServerReady, "description": "not ready (GET /health/ready says why)"}},
)
async def ready(plane: DataPlaneDep) -> JSONResponse:
    ready = plane.ready()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def _parameters(request: Request) -> dict[str, Any]:
    """A repository request's ``parameters`` (an empty body has none)."""
    body = await request.body()
    if not body.strip():
        return {}
    payload = parse_json(body)
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise V2Error("'parameters' must be an object")
    return {"ready": payload["ready"], **parameters} if "ready" in payload else parameters


@router.post(
    "/repository/index",
    summary="Every model of every bundle, with its state and why it is not ready (Triton's model repository extension)",
    responses=_errors(400),
)
async def repository_index(request: Request, plane: DataPlaneDep) -> list[dict[str, str]]:
    ready = (await _parameters(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise V2Error("'ready' must be true or false")
    return await plane.index(ready)


@admin_router.post(
    "/repository/models/{model}/load",
    summary="Load (or reload) a bundle from the model folder in every worker; needs an admin key",
    response_class=Response,
    responses={200: {"description": "in service (no body)"}, **_errors(400, 401, 403, 404)},
)
async def repository_load(request: Request, plane: DataPlaneDep, context: ContextDep, model: str) -> Response:
    await plane.load(model, await _parameters(request), context)
    return Response(status_code=200)


@admin_router.post(
    "/repository/models/{model}/unload",
    summary="Take a bundle out of service in every worker until it is loaded again; needs an admin key",
    response_class=Response,
    responses={200: {"description": "out of service (no body)"}, **_errors(400, 401, 403, 404)},
)
async def repository_unload(request: Request, plane: DataPlaneDep, context: ContextDep, model: str) -> Response:
    await _parameters(request)  # unload_dependents: a bundle's models come and go together anyway
    await plane.unload(model, context)
    return Response(status_code=200)


@router.get("/models/{model}", summary="Model metadata", responses=_MODEL_ERRORS)
@router.get(
    "/models/{model}/versions/{version}", summary="Model metadata of a version", responses=_MODEL_ERRORS, **_VERSIONED
)
async def model_metadata(
    plane: DataPlaneDep, context: ContextDep, model: ModelPath, version: VersionDep
) -> dict[str, Any]:
    return plane.model_metadata(model, version, context)


@router.get("/models/{model}/ready", summary="Model readiness", responses=_MODEL_ERRORS)
@router.get(
    "/models/{model}/versions/{version}/ready",
    summary="Model readiness of a version",
    responses=_MODEL_ERRORS,
    **_VERSIONED,
)
async def model_ready(plane: DataPlaneDep, context: ContextDep, model: ModelPath, version: VersionDep) -> ModelReady:
    # Not in service is the protocol's 4xx: the data plane's 404 naming the models there are.
    return ModelReady(name=plane.model(model, version, context).name, ready=True)


@router.get(
    "/models/{model}/config",
    summary="Model configuration (Triton's model configuration extension)",
    responses=_MODEL_ERRORS,
)
@router.get(
    "/models/{model}/versions/{version}/config",
    summary="Model configuration of a version",
    responses=_MODEL_ERRORS,
    **_VERSIONED,
)
async def model_config(
    plane: DataPlaneDep, context: ContextDep, model: ModelPath, version: VersionDep
) -> dict[str, Any]:
    return plane.model_config(model, version, context)


_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "timeout": {"type": "integer", "minimum": 0, "description": "deadline in microseconds (0: none)"},
        "resize": {"type": "boolean"},
        "invert": {"type": "boolean"},
        "reinvert": {"type": "boolean"},
        "binary_data_output": {"type": "boolean"},
    },
}
#: The inference request's JSON (the Open Inference Protocol's ``$inference_request``), for the docs and for
#: schema-driven clients and fuzzers; the body is read by :func:`app.v2.tensors.parse_infer_request`, which
#: answers 400 for what this allows but a model cannot take.
INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": sorted(DTYPES)},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                    },
                    "data": {"type": "array"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                },
            },
        },
    },
}

_INFER: dict[str, Any] = {
    "response_class": Response,
    "responses": {
        200: {
            "description": "the outputs: JSON, or JSON then binary tensor data (Inference-Header-Content-Length)",
            "content": {"application/json": {}, "application/octet-stream": {}},
        },
        **_errors(400, 401, 404, 408, 413, 503),
    },
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "The V2 inference request as JSON, optionally followed by binary tensor data "
            "(Inference-Header-Content-Length gives the JSON's length); any Content-Type; gzip or deflate.",
            "content": {"application/json": {"schema": INFER_REQUEST_SCHEMA}},
        }
    },
}


def _infer(*path: str) -> dict[str, Any]:
    """The inference route's settings, its ``path`` parameters documented (the endpoint reads them itself)."""
    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}, **_MODEL_PARAMETER}
    parameters = [model if name == "model" else _VERSION_PARAMETER for name in path]
    return {**_INFER, "openapi_extra": {**_INFER["openapi_extra"], "parameters": parameters}}


# The inference routes' router is matched before the other V2 routers (see ``routers``).
@infer_router.post("/models/{model}/infer", summary="Inference (JSON or binary tensor data)", **_infer("model"))
@infer_router.post(
    "/models/{model}/versions/{version}/infer", summary="Inference on a version", **_infer("model", "version")
)
async def infer(request: Request) -> Response:
    # The request alone, its path parameters and what the other routes get as dependencies read directly:
    # FastAPI's dependency resolution costs an inference request more than the lookups themselves
    # (app/routing.py, app/query.py).
    plane: DataPlane = request.app.state.v2
    context = request_context(request)
    settings: Settings = request.app.state.settings
    found = plane.model(request.path_params["model"], request.path_params.get("version"), context)
    body = _inflate(
        await request.body(), request.headers.get("content-encoding", "").strip().lower(), settings.max_body_bytes
    )
    header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
    parsed = parse_infer_request(parse_json(header), binary)
    answer = await plane.infer(found, parsed, context)
    content, header_length = response_body(found.name, found.version, parsed, answer.outputs)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )
