"""Parsing and validating latent vectors sent to ``/reconstruct`` (what ``/encode`` returned)."""

from __future__ import annotations

import numpy as np
from pydantic import ValidationError

from app.errors import BadRequestBody, InvalidInput, PayloadTooLarge
from app.runtime.model import LoadedModel
from app.schemas import Latents

FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    if not payload.latents:
        raise InvalidInput("send at least one latent")
    if len(payload.latents) > max_images:
        raise PayloadTooLarge(
            f"{len(payload.latents)} latents exceed the limit of {max_images} per request "
            "(DENOISE_MAX_BATCH_IMAGES); split it"
        )
    for index, latent in enumerate(payload.latents):
        if len(latent) != manifest.latent_size:
            raise InvalidInput(f"latent has {len(latent)} values, expected {manifest.latent_size}", index=index)
    values = np.asarray(payload.latents, dtype=np.float64)
    too_big = np.abs(values) > FLOAT32_MAX
    if too_big.any():
        raise InvalidInput("latent values must fit in float32", index=int(np.argwhere(too_big)[0][0]))
    return values.astype(np.float32).reshape(len(values), *manifest.latent_shape)
