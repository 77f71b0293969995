"""The app factory: settings, lifespan (models load before the first request), routers, handlers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.sdk.trace import TracerProvider
from starlette.concurrency import run_in_threadpool

from app import __version__, tracing
from app.api_docs import install_api_docs
from app.auth import ApiKeys
from app.config import Settings, get_settings
from app.context import Services, WorkInProgress
from app.errors import install_handlers
from app.imaging import NORMALISATION
from app.logs import skip_unshown_record_fields
from app.metrics import WORK_SAMPLE_S, Metrics
from app.middleware import Limits, RequestContextMiddleware
from app.pages import install_demo
from app.repository import ModelRepository
from app.routes import health, inference, models
from app.routing import PolicyRoute
from app.runtime.registry import Registry
from app.v2 import grpc as v2_grpc
from app.v2 import rest as v2_rest
from app.v2.catalog import Catalog
from app.v2.dataplane import DataPlane

log = logging.getLogger("denoise")

#: Response headers a browser script on another origin may read.
EXPOSED_HEADERS = (
    "X-Request-ID",
    "X-Model",
    "X-Model-Version",
    "X-Anomaly-Score",
    "X-Anomaly",
    "Retry-After",
    "Inference-Header-Content-Length",
)

DESCRIPTION = f"""
Removes noise from 28x28 grayscale images (MNIST-like digits, Fashion-MNIST garments) with a
convolutional denoising autoencoder, and gives access to its latent space.

- `POST /denoise`: a PNG in, the denoised PNG out; several images (multipart `file` fields) in one
  request come back as JSON with base64 PNGs, in input order.
- `POST /encode`: images to latent vectors; `POST /reconstruct`: latent vectors (or an image) back
  to an image.
- `GET /models` lists the models you can name with `?model=`; without it the default model answers.
- Every image input also gets an anomaly score (higher = less like the model's training data) and a
  flag against the model's threshold: `X-Anomaly-Score` and `X-Anomaly` for one image,
  `anomaly_scores` and `anomalous` (input order) in JSON. A flagged output is likely made up.
- `/v2/...`: the same models over the Open Inference Protocol (KServe V2, Triton's clients), whose
  errors are `{{"error": "message"}}`; the same protocol over gRPC on the operator's gRPC port.

Every other error has the body `{{"error": {{"status", "code", "message", "request_id"}}}}`, plus `index`
naming the batch item at fault. Every response carries `X-Request-ID` (yours, if you sent a valid
one); quote it when reporting a problem. Where the operator has set API keys, send
`Authorization: Bearer <key>`.

## Input normalisation

{NORMALISATION}
"""


def _document_keys(app: FastAPI, keys: ApiKeys, routers: tuple[APIRouter, ...]) -> None:
    """Declare the bearer key in the OpenAPI schema on every route that needs it (Swagger's Authorize)."""
    generate = app.openapi
    keyed = {
        (route.path_format, method.lower())
        for router in routers
        for route in router.routes
        if isinstance(route, PolicyRoute) and keys.accepts_any(route.policy.access)
        for method in route.methods or ()
    }
    if not keyed:
        return

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:
            schema = generate()
            schema.setdefault("components", {})["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema["paths"].items():
                for method, operation in operations.items():
                    if (path, method) in keyed:
                        operation["security"] = [{"apiKey": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The service; traced by ``tracer_provider``, by default the one the ``OTEL_*`` environment
    variables configure (:mod:`app.tracing`; none when they set no exporter)."""
    settings = settings or get_settings()
    tracer_provider = tracer_provider or tracing.provider_from_environment()
    logging.captureWarnings(True)  # library warnings become log lines, in every worker
    skip_unshown_record_fields()
    metrics = Metrics()
    registry = Registry(settings)
    keys = ApiKeys(settings.api_key_list, protect_metrics=settings.metrics_need_key, admin=settings.admin_api_key_list)
    services = Services(metrics, keys, WorkInProgress(settings.max_inflight))
    catalog = Catalog({})  # one catalog for both V2 front doors, filled once the bundles are loaded
    registry.listeners.append(lambda: catalog.refresh(registry))
    repository = ModelRepository(registry, services.work, metrics, settings.shutdown_grace_s)
    plane = DataPlane(registry, catalog, repository, settings)  # the V2 answers, for REST and gRPC alike

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(repository.load_at_start)
        registry.start_batchers(metrics, alone=lambda: services.work.count <= 1)
        repository.started()
        await repository.sync(scan=False)  # unloads decided before this worker started
        grpc_server = await v2_grpc.start(plane, settings, services, tracing.grpc_interceptors(tracer_provider))
        watcher = asyncio.get_running_loop().create_task(repository.watch(), name="watch-models")

        async def sample_work() -> None:
            while True:
                metrics.observe_work(repository.ready, registry.work())
                await asyncio.sleep(WORK_SAMPLE_S)

        sampler = asyncio.get_running_loop().create_task(sample_work(), name="sample-work")
        # Everything loaded so far lives as long as the process: keep it out of the garbage
        # collector's scans, which would otherwise show up as latency spikes.
        gc.collect()
        gc.freeze()
        log.info("ready=%s models=%s failed=%s", repository.ready, sorted(registry.models), repository.failed())
        try:
            yield
        finally:
            sampler.cancel()
            watcher.cancel()
            if grpc_server is not None:
                await grpc_server.stop(settings.shutdown_grace_s)  # finishes calls in progress first
            await repository.drain_retired()
            await registry.stop()
            repository.close()
            if tracer_provider is not None:
                tracing.uninstall(tracer_provider)

    app = FastAPI(
        title="denoise",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_api_docs: self-hosted, under a strict Content-Security-Policy
        redoc_url=None,
        # Request spans from the service's own provider, behind one sampling decision (app/tracing.py);
        # none of FastAPI's own metrics and logs (the service has its metrics and access line).
        telemetry=tracing.telemetry(tracer_provider),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.v2 = plane
    app.state.repository = repository
    install_handlers(app)

    # A request is matched against the routes in this order: inference first, the documentation last.
    routers = (inference.router, *v2_rest.routers, health.router, models.router, models.metrics_router)
    for router in routers:
        app.include_router(router)
    install_api_docs(app)
    if settings.demo:
        install_demo(app)
    limits = Limits(settings.max_body_bytes, settings.body_timeout_s)
    app.add_middleware(RequestContextMiddleware, services=services, limits=limits)
    if tracer_provider is not None:
        tracing.install(app, tracer_provider)  # outside the request context: the caller's context is current there
    _document_keys(app, keys, routers)
    if settings.cors_origin_list:
        # Outermost, so that preflight requests are answered without a key and errors carry CORS headers.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origin_list),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
    return app
