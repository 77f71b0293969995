"""What routes need, as ``Annotated`` dependencies: the registry, the model, the uploaded images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request

from app.config import Settings
from app.errors import InvalidInput, UnsupportedMediaType
from app.imaging import DecodeOptions
from app.multipart import read_parts
from app.pipeline import decode_options
from app.repository import ModelRepository
from app.routing import request_context
from app.runtime.model import LoadedModel
from app.runtime.registry import Registry

MULTIPART = "multipart/form-data"
FILE_FIELD = "file"


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


async def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository
    return repository


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]


ModelName = Annotated[str | None, Query(description="model name (default: DENOISE_DEFAULT_MODEL)", max_length=64)]


def resolve_model(request: Request, name: str | None) -> LoadedModel:
    """The model in service that ``name`` names (the default one for None), labelled on the request."""
    repository: ModelRepository = request.app.state.repository
    loaded = repository.served(name)
    context = request_context(request)
    context.model, context.version = loaded.manifest.name, loaded.manifest.version
    return loaded


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


Resize = Annotated[bool, Query(description="resample any size to 28x28 (Lanczos) instead of rejecting it")]
Invert = Annotated[bool, Query(description="invert dark-on-light images (the models expect light on black)")]


@dataclass(frozen=True)
class ImageQuery:
    resize: bool
    invert: bool


async def image_query(resize: Resize = False, invert: Invert = False) -> ImageQuery:
    return ImageQuery(resize=resize, invert=invert)


ImageQueryDep = Annotated[ImageQuery, Depends(image_query)]


@dataclass(frozen=True)
class ImageRequest:
    """What a route that reads images needs, in one dependency (each dependency FastAPI solves costs
    per request): the model ``?model=`` names, the settings, and how to decode the uploads."""

    model: LoadedModel
    settings: Settings
    options: DecodeOptions


async def image_request(
    request: Request, model: ModelName = None, resize: Resize = False, invert: Invert = False
) -> ImageRequest:
    settings: Settings = request.app.state.settings
    loaded = resolve_model(request, model)
    return ImageRequest(loaded, settings, decode_options(settings, resize=resize, invert=invert))


ImageRequestDep = Annotated[ImageRequest, Depends(image_request)]

#: On routes that answer with images: turn the (light-on-black) output back to dark on light.
Reinvert = Annotated[bool, Query(description="invert the output image back to dark on light (pairs with invert=true)")]


async def _multipart_files(request: Request, settings: Settings) -> list[bytes]:
    parts = await read_parts(
        request.stream(),
        request.headers.get("content-type", ""),
        field=FILE_FIELD,
        max_files=settings.max_batch_images,
        max_parts=settings.max_batch_images + 16,
    )
    if not parts:
        raise InvalidInput(
            f"multipart body has no {FILE_FIELD!r} field; send each image as a file field named {FILE_FIELD!r}"
        )
    for index, part in enumerate(parts):
        if not part.is_file:
            raise InvalidInput(f"field {FILE_FIELD!r} #{index} is text, not a file upload", index=index)
    return [part.data for part in parts]


async def read_uploads(request: Request, settings: Settings) -> list[bytes]:
    """The uploaded image bodies: multipart ``file`` fields, or the raw body with an image type."""
    kind = media_type(request)
    accepted = settings.image_media_types
    if kind == MULTIPART:
        return await _multipart_files(request, settings)
    if kind in accepted or kind == "application/octet-stream":
        return [await request.body()]
    raise UnsupportedMediaType(
        f"content type {kind or '(none)'!r} not accepted; send {' or '.join(accepted)} as the raw body, "
        f"or {MULTIPART} with {FILE_FIELD!r} fields"
    )
