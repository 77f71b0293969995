"""OpenTelemetry traces, configured by the standard ``OTEL_*`` environment variables only.

- ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` or ``none`` (several, comma-separated; any exporter
  installed under the ``opentelemetry_traces_exporter`` entry point). Unset or ``none``: tracing is
  off, nothing is instrumented and no span is made.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and the exporter's other variables), ``OTEL_SERVICE_NAME``,
  ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` are read by the
  SDK itself.

Each worker process builds its own provider when it builds the app (:func:`provider_from_environment`),
so every worker exports. FastAPI's own telemetry makes each HTTP request's span (:func:`telemetry`: a
W3C ``traceparent`` continues the caller's trace; the span is named by the route matched; health and
metrics routes are not traced), behind one sampling decision per request (:class:`SamplingGate`: a
request left unsampled pays for that decision alone, not for a span, its attributes and their
bookkeeping). :func:`install` gives the rest of the service its tracer: the gRPC server's interceptor
(:func:`grpc_interceptors`), the image pipeline's ``decode`` and ``encode`` steps (:func:`step`), the
batchers' queue waits and ``onnxruntime batch`` spans (:mod:`app.runtime.batcher`).

A span costs tens of microseconds to make, end and export, and even an event on one costs more
than decoding or encoding a 28×28 PNG (``python -m bench.span_cost``): a step of a single-image
request is a duration attribute of the request's span (``denoise.decode_us``: :class:`Timed`), and
a step over several images is a span of its own.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from importlib.metadata import EntryPoint, entry_points
from types import TracebackType
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from starlette.types import ASGIApp, Receive, Scope, Send

#: HTTP paths not traced: health and metrics.
UNTRACED_PATHS = re.compile(r"^(/v2)?/health/|^/metrics$")
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


#: The trace id a request's sampling decision was made on, for its span to take (:class:`_DecidedTraceIds`).
_decided_trace_id: ContextVar[int | None] = ContextVar("denoise_decided_trace_id", default=None)
#: Whether the current HTTP request is recorded, as :class:`SamplingGate` decided (None outside one: a gRPC
#: call, background work): an unsampled request's steps skip looking up its span.
_sampled: ContextVar[bool | None] = ContextVar("denoise_sampled", default=None)
#: The ASGI scope key under which :class:`SamplingGate` leaves an unsampled caller's context.
CALLER_CONTEXT = "denoise.caller_context"


class _DecidedTraceIds(IdGenerator):
    """A provider's id generator, except that the first trace id asked for in a request that
    :class:`SamplingGate` let through is the one its sampling decision was made on: the SDK's sampler then
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


class SamplingGate:
    """The provider's sampler, asked once per HTTP request before anything is recorded: FastAPI's own
    telemetry (which makes the request's span) calls :meth:`exclude` first, and makes no span, attributes
    or bookkeeping for a request it excludes. A sampled request's span then takes the trace id the
    decision was made on, and so the same decision; an unsampled caller's context is left in the scope
    for :class:`CallersContext` (the access line keeps the caller's trace id). Health and metrics paths
    are not traced."""

    def __init__(self, provider: TracerProvider) -> None:
        if not isinstance(provider.id_generator, _DecidedTraceIds):
            # Before the request tracer is made: a tracer keeps the generator it was made with.
            provider.id_generator = _DecidedTraceIds(provider.id_generator)  # type: ignore[assignment]
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        #: The headers the configured propagators read (``OTEL_PROPAGATORS``), as ASGI names them.
        self.fields = frozenset(field.lower().encode("latin-1") for field in propagate.get_global_textmap().fields)

    def exclude(self, scope: MutableMapping[str, Any]) -> bool:
        """FastAPI's ``telemetry["exclude"]``: True where the request is not to be traced."""
        if scope["type"] != "http" or UNTRACED_PATHS.search(scope["path"]):
            _sampled.set(False)
            return True
        headers = scope["headers"]
        if any(name in self.fields for name, _ in headers):
            # ASGI header names are lower case, as the propagators ask for them.
            caller = propagate.extract({name.decode("latin-1"): value.decode("latin-1") for name, value in headers})
        else:
            caller = Context()  # what the propagators make of a request without their headers
        parent = trace.get_current_span(caller).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else self.ids.generate_trace_id()
        decision = self.sampler.should_sample(caller, trace_id, scope["method"], trace.SpanKind.SERVER)
        if decision.decision is not Decision.DROP:  # recorded: sampled, or recorded only (a custom sampler)
            _decided_trace_id.set(None if parent.is_valid else trace_id)
            _sampled.set(True)
            return False
        if parent.is_valid:
            scope[CALLER_CONTEXT] = caller
        _sampled.set(False)
        return True


class CallersContext:
    """The caller's trace context made current for a request :class:`SamplingGate` left unsampled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = scope.pop(CALLER_CONTEXT, None)
        if caller is None:
            await self.app(scope, receive, send)
            return
        token = context.attach(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)


def telemetry(provider: TracerProvider | None) -> TelemetryConfig:
    """FastAPI's ``telemetry`` setting: request spans from ``provider`` behind :class:`SamplingGate`
    where tracing is on, and none of FastAPI's own metrics, logs or per-operation spans (the service has
    its own metrics and access line)."""
    config: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    if provider is not None:
        config["tracing"] = True
        config["tracer_provider"] = provider
        config["exclude"] = SamplingGate(provider).exclude
    return config


def install(app: FastAPI, provider: TracerProvider) -> None:
    """Give the service its tracer (see the module's text) and make an unsampled caller's context
    current (:class:`CallersContext`, as the outermost middleware added so far). The app was made
    with :func:`telemetry`'s setting for ``provider``."""
    global _tracer
    app.add_middleware(CallersContext)
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


def _recorded_span() -> trace.Span | None:
    """The current span where tracing is on and it is recorded; None otherwise, found without a lookup
    in a request :class:`SamplingGate` left unsampled."""
    if _tracer is None or _sampled.get() is False:
        return None
    current = trace.get_current_span()
    return current if current.is_recording() else None


def recording() -> bool:
    """Whether tracing is on and the current request's span is recorded (sampled)."""
    return _recorded_span() is not None


def span(name: str, **attributes: Any) -> AbstractContextManager[object]:
    """A child span of the current one for the block, where the current one is recorded (an unsampled
    request's children would not be, and cost as much to make); else a context that does nothing."""
    if _tracer is None or _recorded_span() is None:
        return _NOTHING
    return _tracer.start_as_current_span(name, attributes=_attributes(attributes))


def step(name: str, images: int) -> AbstractContextManager[object]:
    """A step of the current request over ``images``, where its span is recorded: a child span (with
    ``denoise.images``) where there are several images, else :func:`timed` on the request's span
    (whose ``denoise.images`` says 1)."""
    if images > 1:
        return span(name, images=images)
    return timed(name)


def timed(step: str) -> AbstractContextManager[object]:
    """The block timed as :class:`Timed` on the current span, where it is recorded."""
    current = _recorded_span()
    if current is None:
        return _NOTHING
    return Timed(current, step)


class Timed:
    """A step's time as an attribute of ``span`` rather than a span or event of its own:
    ``denoise.<step>_us``, the microseconds it took, added to what the span's earlier steps of that
    name took (a request queued in several pieces waits several times), and ``denoise.<step>_error``,
    the error's type, where it failed. Also a context manager timing its block."""

    __slots__ = ("span", "started_ns", "step")

    def __init__(self, span: trace.Span, step: str, started_ns: int = 0) -> None:
        self.span, self.step = span, step
        #: When the step started, by ``time.perf_counter_ns()``.
        self.started_ns = started_ns or time.perf_counter_ns()

    def end(self, error: BaseException | None = None) -> None:
        took = (time.perf_counter_ns() - self.started_ns) // 1000
        name = f"denoise.{self.step}_us"
        recorded = getattr(self.span, "attributes", None)  # the SDK's spans show theirs; the API's have none
        earlier = recorded.get(name, 0) if recorded else 0
        attributes: dict[str, Any] = {name: earlier + took}
        if error is not None:
            attributes[f"denoise.{self.step}_error"] = type(error).__name__
        self.span.set_attributes(attributes)

    def __enter__(self) -> None:
        pass  # timed from its making, just before the block

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.end(error)


def _attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"denoise.{key}": value for key, value in attributes.items()}


def trace_id() -> str | None:
    """The current request's trace id (32 hex digits), where tracing is on and a trace is current."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def annotate(**attributes: Any) -> None:
    """Add ``denoise.<key>`` attributes to the current span, where one is being recorded."""
    current = _recorded_span()
    if current is not None:
        current.set_attributes(_attributes(attributes))
