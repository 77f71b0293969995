"""The Open Inference Protocol's data plane: every answer the protocol gives, whichever door asks.

REST (:mod:`app.v2.rest`) and gRPC (:mod:`app.v2.grpc`) only translate their wire formats to these
calls and back, as KServe's ``protocol/dataplane.py`` and MLServer's ``handlers/dataplane.py`` are
shared by their front doors. The data plane owns model lookup (one resolver: the V2 catalog, its
404 naming the models there are), the request context's labels (set only once a name resolves to a
bundle, so that no name a caller invents becomes a metric label), health, metadata, configuration,
inference, and the repository operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from app import __version__
from app.config import Settings
from app.context import RequestContext
from app.repository import ModelRepository, check_load_parameters
from app.runtime.registry import Registry
from app.v2 import inference
from app.v2.catalog import Catalog, V2Model
from app.v2.tensors import InferRequest, Tensor

SERVER_NAME = "denoise"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository")


@dataclass(frozen=True)
class Inferred:
    """An inference's answer: the model that ran and the requested outputs with their form (binary or not)."""

    model: V2Model
    outputs: list[tuple[Tensor, bool]]


@dataclass
class DataPlane:
    registry: Registry
    catalog: Catalog
    repository: ModelRepository
    settings: Settings

    # The server

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.repository.ready

    def metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    # Models

    def model(self, name: str, version: str | None, context: RequestContext) -> V2Model:
        """The model in service (404 naming the models there are); the request is labelled with its bundle."""
        # the unloaded bundles are looked up only when the name misses (the request's error path)
        model = self.catalog.get(name, version or None) or self.catalog.find(
            name, version or None, self.repository.unloaded
        )
        context.model, context.version = model.bundle.manifest.name, model.version
        return model

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether the model is in service (over REST a False is a 404, the protocol's "not ready")."""
        return self.catalog.get(name, version or None) is not None

    def model_metadata(self, name: str, version: str | None, context: RequestContext) -> dict[str, Any]:
        return self.model(name, version, context).metadata()

    def model_config(self, name: str, version: str | None, context: RequestContext) -> dict[str, Any]:
        return self.model(name, version, context).config(self.settings.max_batch_images)

    async def infer(self, model: V2Model, request: InferRequest, context: RequestContext) -> Inferred:
        """Run a parsed request on ``model`` (found with :meth:`model`), under the context's deadline, the
        earlier of the door's own and the request's ``timeout`` parameter."""
        context.images = request.inputs[0].shape[0] if request.inputs[0].shape else 0
        context.deadline = inference.deadline(request, context.received, context.deadline)
        return Inferred(model, await inference.run(model, request, self.settings, context.until()))

    # The repository (Triton's model repository extension)

    async def index(self, ready_only: bool) -> list[dict[str, str]]:
        return await run_in_threadpool(self.repository.index, ready_only)

    async def load(self, name: str, parameters: dict[str, Any], context: RequestContext) -> None:
        check_load_parameters(parameters)
        context.model, _ = await self.repository.bundle(name)
        await self.repository.load(name)

    async def unload(self, name: str, context: RequestContext) -> None:
        context.model, _ = await self.repository.bundle(name)
        await self.repository.unload(name)
