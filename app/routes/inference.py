"""``/denoise``, ``/encode`` and ``/reconstruct``."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from app.config import Settings
from app.dependencies import (
    ImageOutputQuery,
    ImageQuery,
    ImageRequest,
    media_type,
    read_uploads,
    resolve_model,
)
from app.jsonbody import JSONBody
from app.latents import check_latents, parse_latents
from app.pipeline import infer_images, output_pngs
from app.policy import INFERENCE
from app.query import query_parameters, read_query
from app.routing import policy_route, request_context
from app.runtime.model import Inference, LoadedModel
from app.schemas import DenoiseBatchResponse, ErrorResponse, Latents
from denoise_bundle.manifest import GraphName

ANOMALY_SCORE_HEADER = "X-Anomaly-Score"
ANOMALY_HEADER = "X-Anomaly"

router = APIRouter(tags=["inference"], route_class=policy_route(INFERENCE))

_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A 28x28 PNG as the raw body (Content-Type: image/png), or multipart/form-data with one "
        "or more `file` fields (a batch, answered in input order). Any PNG mode is converted to 8-bit "
        "grayscale: RGB by ITU-R 601-2 luma, alpha composited over black, 16-bit scaled to 8-bit.",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
        },
    }
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


_IMAGE_ERRORS = _errors(400, 401, 404, 408, 413, 415, 422, 503)
_ANOMALY_HEADERS: dict[str, Any] = {
    ANOMALY_SCORE_HEADER: {
        "description": "one image from an image input: how unlike the model's training data it is (higher = less "
        "typical; GET /models gives the threshold)",
        "schema": {"type": "number"},
    },
    ANOMALY_HEADER: {
        "description": "one image from an image input: `true` when the score is above the model's threshold",
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
}
_PNG_OR_BATCH: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "one image: the PNG; several images (or Accept: application/json): JSON with base64 PNGs",
        "content": {"image/png": {}, "application/json": {"schema": DenoiseBatchResponse.model_json_schema()}},
        "headers": _ANOMALY_HEADERS,
    }
}


def _wants_json(request: Request, count: int) -> bool:
    return count > 1 or request.headers.get("accept", "").startswith("application/json")


def _score(value: np.floating[Any]) -> float:
    return float(f"{value:.6g}")


def _headers(model: LoadedModel, result: Inference) -> dict[str, str]:
    """The model's name and version, and for a single image read from an image, its anomaly score and flag."""
    headers = {"X-Model": model.manifest.name, "X-Model-Version": model.manifest.version}
    flags = result.anomalous
    if result.scores is not None and flags is not None and len(flags) == 1:
        headers[ANOMALY_SCORE_HEADER] = repr(_score(result.scores[0]))
        headers[ANOMALY_HEADER] = "true" if flags[0] else "false"
    return headers


def _anomaly_fields(result: Inference) -> dict[str, Any]:
    if result.scores is None:
        return {}
    return {"anomaly_scores": [_score(s) for s in result.scores], "anomalous": result.anomalous}


async def _image_response(request: Request, model: LoadedModel, result: Inference, reinvert: bool) -> Response:
    headers = _headers(model, result)
    count = len(result.outputs)
    if not _wants_json(request, count):
        (png,) = await output_pngs(result.outputs[:1], reinvert)
        return Response(png, media_type="image/png", headers=headers)
    body = DenoiseBatchResponse(
        model=model.manifest.name,
        version=model.manifest.version,
        count=count,
        images=[base64.b64encode(image).decode("ascii") for image in await output_pngs(result.outputs, reinvert)],
        **_anomaly_fields(result),
    )
    return JSONBody(body.model_dump(exclude_none=True), headers=headers)


async def _infer_images(request: Request, image: ImageRequest, graph: GraphName) -> Inference:
    """Read the uploaded images and run ``graph`` on them (:func:`app.pipeline.infer_images`)."""
    uploads = await read_uploads(request, image.settings)
    context = request_context(request)
    context.images = len(uploads)
    return await infer_images(image.model, graph, uploads, image.options, context.until())


@router.post(
    "/denoise",
    summary="Denoise one image or a batch",
    response_class=Response,
    responses={**_PNG_OR_BATCH, **_IMAGE_ERRORS},
    openapi_extra={**_IMAGE_BODY, "parameters": query_parameters(ImageOutputQuery)},
)
async def denoise(request: Request) -> Response:
    query = read_query(request, ImageOutputQuery)
    image = ImageRequest.of(request, query)
    return await _image_response(
        request, image.model, await _infer_images(request, image, "autoencoder"), query.reinvert
    )


@router.post(
    "/encode",
    summary="Encode images to latent vectors",
    response_model=Latents,
    responses=_IMAGE_ERRORS,
    openapi_extra={**_IMAGE_BODY, "parameters": query_parameters(ImageQuery)},
)
async def encode(request: Request) -> JSONBody:
    image = ImageRequest.of(request, read_query(request, ImageQuery))
    result = await _infer_images(request, image, "encoder")
    model = image.model
    latents = result.outputs
    return JSONBody(
        {
            "model": model.manifest.name,
            "version": model.manifest.version,
            "latent_shape": list(model.manifest.latent_shape),
            "latents": np.ascontiguousarray(latents).reshape(len(latents), -1),
            **_anomaly_fields(result),
        },
        headers=_headers(model, result),
    )


@router.post(
    "/reconstruct",
    summary="Decode latents from /encode (JSON), or encode-then-decode an image",
    response_class=Response,
    responses={**_PNG_OR_BATCH, **_IMAGE_ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": Latents.model_json_schema()},
                **_IMAGE_BODY["requestBody"]["content"],
            },
        },
        "parameters": query_parameters(ImageOutputQuery),
    },
)
async def reconstruct(request: Request) -> Response:
    query = read_query(request, ImageOutputQuery)
    if media_type(request) == "application/json":
        settings: Settings = request.app.state.settings
        payload = parse_latents(await request.body())
        loaded = resolve_model(request, query.model or payload.model)
        latents = check_latents(payload, loaded, settings.max_batch_images)
        context = request_context(request)
        context.images = len(latents)
        result = await loaded.infer("decoder", latents, context.until())
        return await _image_response(request, loaded, result, query.reinvert)
    image = ImageRequest.of(request, query)
    return await _image_response(
        request, image.model, await _infer_images(request, image, "autoencoder"), query.reinvert
    )
