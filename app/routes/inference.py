"""``/denoise``, ``/encode`` and ``/reconstruct``."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.dependencies import (
    ImageQueryDep,
    ModelDep,
    ModelName,
    RegistryDep,
    SettingsDep,
    decode_uploads,
    media_type,
    read_uploads,
    resolve_model,
)
from app.errors import BadRequestBody, InvalidInput
from app.imaging import encode_png, to_model_input, to_pixels
from app.runtime.registry import LoadedModel
from app.schemas import DenoiseBatchResponse, ErrorResponse, Latents

router = APIRouter(tags=["inference"])

FLOAT32_MAX = float(np.finfo(np.float32).max)

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


_IMAGE_ERRORS = _errors(400, 404, 413, 415, 422, 503)
_PNG_OR_BATCH: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "one image: the PNG; several images (or Accept: application/json): JSON with base64 PNGs",
        "content": {"image/png": {}, "application/json": {"schema": DenoiseBatchResponse.model_json_schema()}},
    }
}


def _wants_json(request: Request, count: int) -> bool:
    return count > 1 or request.headers.get("accept", "").startswith("application/json")


def _image_response(request: Request, model: LoadedModel, pixels: np.ndarray) -> Response:
    headers = {"X-Model": model.manifest.name, "X-Model-Version": model.manifest.version}
    if not _wants_json(request, len(pixels)):
        return Response(encode_png(pixels[0]), media_type="image/png", headers=headers)
    body = DenoiseBatchResponse(
        model=model.manifest.name,
        version=model.manifest.version,
        count=len(pixels),
        images=[base64.b64encode(encode_png(p)).decode("ascii") for p in pixels],
    )
    return JSONResponse(body.model_dump(), headers=headers)


async def _images_in(request: Request, settings: SettingsDep, query: ImageQueryDep) -> np.ndarray:
    pixels = await decode_uploads(await read_uploads(request, settings), query, settings)
    request.state.images = len(pixels)
    return to_model_input(pixels)


@router.post(
    "/denoise",
    summary="Denoise one image or a batch",
    response_class=Response,
    responses={**_PNG_OR_BATCH, **_IMAGE_ERRORS},
    openapi_extra=_IMAGE_BODY,
)
async def denoise(request: Request, model: ModelDep, settings: SettingsDep, query: ImageQueryDep) -> Response:
    images = await _images_in(request, settings, query)
    return _image_response(request, model, to_pixels(await model.infer("autoencoder", images)))


@router.post(
    "/encode",
    summary="Encode images to latent vectors",
    response_model=Latents,
    responses=_IMAGE_ERRORS,
    openapi_extra=_IMAGE_BODY,
)
async def encode(request: Request, model: ModelDep, settings: SettingsDep, query: ImageQueryDep) -> JSONResponse:
    latents = await model.infer("encoder", await _images_in(request, settings, query))
    return JSONResponse(
        {
            "model": model.manifest.name,
            "version": model.manifest.version,
            "latent_shape": list(model.manifest.latent_shape),
            "latents": latents.reshape(len(latents), -1).tolist(),
        }
    )


def parse_latents(body: bytes) -> Latents:
    try:
        return Latents.model_validate_json(body)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise BadRequestBody(f"body is not valid JSON: {exc.errors()[0]['msg']}") from exc
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][:3])}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidInput(f"invalid latents ({problems}); send the body /encode returned") from exc


def check_latents(payload: Latents, model: LoadedModel, max_images: int) -> np.ndarray:
    """Validate latents against the model's manifest; return the decoder's input batch."""
    manifest = model.manifest
    if payload.model is not None and payload.model != manifest.name:
        raise InvalidInput(f"latents are from model {payload.model!r} but the request is for {manifest.name!r}")
    if payload.version is not None and payload.version != manifest.version:
        raise InvalidInput(
            f"latents are from {manifest.name} version {payload.version}; the loaded version is {manifest.version}"
        )
    if tuple(payload.latent_shape) != manifest.latent_shape:
        raise InvalidInput(
            f"latent_shape {payload.latent_shape} does not match the model's {list(manifest.latent_shape)}"
        )
    if not 1 <= len(payload.latents) <= max_images:
        raise InvalidInput(f"send between 1 and {max_images} latents, got {len(payload.latents)}")
    for index, latent in enumerate(payload.latents):
        if len(latent) != manifest.latent_size:
            raise InvalidInput(f"latent has {len(latent)} values, expected {manifest.latent_size}", index=index)
    values = np.asarray(payload.latents, dtype=np.float64)
    too_big = np.abs(values) > FLOAT32_MAX
    if too_big.any():
        raise InvalidInput("latent values must fit in float32", index=int(np.argwhere(too_big)[0][0]))
    return values.astype(np.float32).reshape(len(values), *manifest.latent_shape)


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
        }
    },
)
async def reconstruct(
    request: Request, registry: RegistryDep, settings: SettingsDep, query: ImageQueryDep, model: ModelName = None
) -> Response:
    if media_type(request) == "application/json":
        payload = parse_latents(await request.body())
        loaded = resolve_model(request, registry, model or payload.model)
        latents = check_latents(payload, loaded, settings.max_batch_images)
        request.state.images = len(latents)
        return _image_response(request, loaded, to_pixels(await loaded.infer("decoder", latents)))
    loaded = resolve_model(request, registry, model)
    images = await _images_in(request, settings, query)
    return _image_response(request, loaded, to_pixels(await loaded.infer("autoencoder", images)))
