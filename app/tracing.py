"""OpenTelemetry traces, configured by the standard ``OTEL_*`` environment variables only.

- ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` or ``none`` (several, comma-separated; any exporter
  installed under the ``opentelemetry_traces_exporter`` entry point). Unset or ``none``: tracing is
  off, nothing is instrumented and no span is made.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and the exporter's other variables), ``OTEL_SERVICE_NAME``,
  ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` are read by the
  SDK itself.

Each worker process builds its own provider when it builds the app (:func:`provider_from_environment`),
so every worker exports. :func:`install` instruments the HTTP app (the ASGI instrumentation: a W3C
``traceparent`` continues the caller's trace; health and metrics routes are not traced) behind one
sampling decision per request (:class:`SampledFirst`: a request left unsampled pays for that decision
alone, not for a span, its attributes and the instrumentation's bookkeeping), and gives the
rest of the service its tracer: the gRPC server's interceptor (:func:`grpc_interceptors`), the image
pipeline's ``decode`` and ``encode`` spans (:func:`span`) and the batchers' ``queue wait`` and
``onnxruntime batch`` spans (:mod:`app.runtime.batcher`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fastapi import FastAPI
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.util.http import parse_excluded_urls
from starlette.types import ASGIApp, Receive, Scope, Send

#: HTTP paths not traced (regular expressions searched in the URL, as the instrumentation takes them).
UNTRACED_URLS = "/health/,/metrics$,/v2/health/"
#: gRPC methods not traced: the protocol's health checks.
UNTRACED_METHODS = ("ServerLive", "ServerReady", "ModelReady")
#: ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or its ``_TRACES_`` form) values, and the exporter each selects for ``otlp``.
OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
EXPORTER_GROUP = "opentelemetry_traces_exporter"

_tracer: trace.Tracer | None = None
_NOTHING = nullcontext()


class TracingConfigError(ValueError):
    """``OTEL_TRACES_EXPORTER`` (or the OTLP protocol) names something that is not installed."""


def _exporter_entry(name: str) -> EntryPoint:
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
        )
        if protocol.strip() not in OTLP_BY_PROTOCOL:
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not supported; use one of {', '.join(OTLP_BY_PROTOCOL)}"
            )
        name = OTLP_BY_PROTOCOL[protocol.strip()]
    found = entry_points(group=EXPORTER_GROUP, name=name)
    if not found:
        installed = ", ".join(sorted({"otlp", "none", *(point.name for point in entry_points(group=EXPORTER_GROUP))}))
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed; installed: {installed}")
    return next(iter(found))


def _exporter(name: str) -> SpanExporter:
    exporter: SpanExporter = _exporter_entry(name).load()()
    return exporter


def _exporter_names() -> list[str]:
    names = [name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    return [] if names == ["none"] else names


def check_environment() -> None:
    """Raise :class:`TracingConfigError` if ``OTEL_TRACES_EXPORTER`` names an exporter that is not installed
    (at start, so that a typo stops the service with one line rather than every worker with a traceback)."""
    for name in _exporter_names():
        _exporter_entry(name)


def provider_from_environment() -> TracerProvider | None:
    """A tracer provider exporting where ``OTEL_TRACES_EXPORTER`` says, or None when tracing is off."""
    names = _exporter_names()
    if not names:
        return None
    # The SDK reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and the sampler variables itself.
    provider = TracerProvider(resource=Resource.create({"process.pid": os.getpid()}))
    for name in names:
        exporter = _exporter(name)
        # The console exporter writes as it goes; the others export in the background, in batches.
        provider.add_span_processor(
            SimpleSpanProcessor(exporter) if name == "console" else BatchSpanProcessor(exporter)
        )
    return provider


def _method_only(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The request span's first name: its method. The route the request matched names it once known
    (:func:`name_http_span`), which spares matching the routes a second time for every request."""
    return str(scope.get("method", "HTTP")), {}


#: The trace id a request's sampling decision was made on, for its span to take (:class:`_DecidedTraceIds`).
_decided_trace_id: ContextVar[int | None] = ContextVar("denoise_decided_trace_id", default=None)


class _DecidedTraceIds(IdGenerator):
    """A provider's id generator, except that the first trace id asked for in a request that
    :class:`SampledFirst` let through is the one its sampling decision was made on: the SDK's sampler then
    decides the same for the request's span (the built-in samplers decide by the parent and the trace id)."""

    def __init__(self, ids: IdGenerator) -> None:
        self.ids = ids

    def generate_span_id(self) -> int:
        return self.ids.generate_span_id()

    def generate_trace_id(self) -> int:
        decided = _decided_trace_id.get()
        if decided is None:
            return self.ids.generate_trace_id()
        _decided_trace_id.set(None)
        return decided


class SampledFirst:
    """The outermost HTTP layer where tracing is on: the provider's sampler decides once per request,
    on the caller's context (``traceparent``) and the request's trace id, before anything is recorded. A
    sampled request goes through the ASGI instrumentation, whose span takes that trace id and so the same
    decision; any other goes straight to the app, with the caller's context current (the access line keeps
    the caller's trace id). Health and metrics paths are not traced."""

    def __init__(self, app: ASGIApp, *, provider: TracerProvider) -> None:
        if not isinstance(provider.id_generator, _DecidedTraceIds):
            # Before the instrumentation's tracer is made: a tracer keeps the generator it was made with.
            provider.id_generator = _DecidedTraceIds(provider.id_generator)  # type: ignore[assignment]
        self.app = app
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.untraced = parse_excluded_urls(UNTRACED_URLS)
        self.traced = OpenTelemetryMiddleware(
            app,
            excluded_urls=UNTRACED_URLS,
            default_span_details=_method_only,
            tracer_provider=provider,
            exclude_spans=["receive", "send"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.untraced.url_disabled(scope["path"]):
            await self.app(scope, receive, send)
            return
        # ASGI header names are lower case, as the propagators ask for them.
        caller = propagate.extract(
            {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        )
        parent = trace.get_current_span(caller).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else self.ids.generate_trace_id()
        decision = self.sampler.should_sample(caller, trace_id, scope["method"], trace.SpanKind.SERVER)
        if decision.decision is not Decision.DROP:  # recorded: sampled, or recorded only (a custom sampler)
            decided = _decided_trace_id.set(None if parent.is_valid else trace_id)
            try:
                await self.traced(scope, receive, send)
            finally:
                _decided_trace_id.reset(decided)
            return
        token = context.attach(caller) if parent.is_valid else None
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                context.detach(token)


def install(app: FastAPI, provider: TracerProvider) -> None:
    """Trace ``app``'s HTTP requests (:class:`SampledFirst`, as the outermost middleware added so far) and
    give the rest of the service its tracer (see the module's text)."""
    global _tracer
    app.add_middleware(SampledFirst, provider=provider)
    _tracer = provider.get_tracer("denoise")


def uninstall(provider: TracerProvider) -> None:
    """Export what is left and stop tracing (at shutdown)."""
    global _tracer
    _tracer = None
    provider.shutdown()


def tracer() -> trace.Tracer | None:
    """The service's tracer, or None when tracing is off."""
    return _tracer


def grpc_interceptors(provider: TracerProvider | None) -> Sequence[Any]:
    """The gRPC server interceptor that continues callers' traces from their metadata (none when off)."""
    if provider is None:
        return ()
    untraced = filters.any_of(*(filters.method_name(name) for name in UNTRACED_METHODS))
    return (aio_server_interceptor(tracer_provider=provider, filter_=filters.negate(untraced)),)  # type: ignore[no-untyped-call]


def recording() -> bool:
    """Whether tracing is on and the current request's span is recorded (sampled)."""
    return _tracer is not None and trace.get_current_span().is_recording()


def span(name: str, **attributes: Any) -> AbstractContextManager[object]:
    """A child span of the current one for the block, where the current one is recorded (an unsampled
    request's children would not be, and cost as much to make); else a context that does nothing."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return _NOTHING
    return _tracer.start_as_current_span(
        name, attributes={f"denoise.{key}": value for key, value in attributes.items()}
    )


def trace_id() -> str | None:
    """The current request's trace id (32 hex digits), where tracing is on and a trace is current."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def name_http_span(method: str, route: str) -> None:
    """Name the current HTTP request's span by its route (``POST /v2/models/{model}/infer``), as the
    semantic conventions ask, and set ``http.route``."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.update_name(f"{method} {route}")
        current.set_attribute("http.route", route)


def annotate(**attributes: Any) -> None:
    """Add ``denoise.<key>`` attributes to the current span, where one is being recorded."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes({f"denoise.{key}": value for key, value in attributes.items()})
