"""What routes need, as ``Annotated`` dependencies: the registry, the model, the uploaded images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, Field

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


def resolve_model(request: Request, name: str | None) -> LoadedModel:
    """The model in service that ``name`` names (the default one for None), labelled on the request."""
    repository: ModelRepository = request.app.state.repository
    loaded = repository.served(name)
    context = request_context(request)
    context.model, context.version = loaded.manifest.name, loaded.manifest.version
    return loaded


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class ImageQuery(BaseModel):
    """The query of a route that reads images (read by :func:`app.query.read_query`)."""

    model: str | None = Field(None, description="model name (default: DENOISE_DEFAULT_MODEL)", max_length=64)
    resize: bool = Field(False, description="resample any size to 28x28 (Lanczos) instead of rejecting it")
    invert: bool = Field(False, description="invert dark-on-light images (the models expect light on black)")


class ImageOutputQuery(ImageQuery):
    """The query of a route that reads images and answers with images."""

    reinvert: bool = Field(False, description="invert the output image back to dark on light (pairs with invert=true)")


@dataclass(frozen=True)
class ImageRequest:
    """What a route that reads images needs: the model ``?model=`` names, the settings, and how to decode
    the uploads."""

    model: LoadedModel
    settings: Settings
    options: DecodeOptions

    @classmethod
    def of(cls, request: Request, query: ImageQuery) -> ImageRequest:
        settings: Settings = request.app.state.settings
        loaded = resolve_model(request, query.model)
        return cls(loaded, settings, decode_options(settings, resize=query.resize, invert=query.invert))


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
