"""What a sampled request's span costs in OpenTelemetry's Python SDK, in one process:
``python -m bench.span_cost [--spans 5000] [--rounds 3]``.

A sampled single-image request makes one span: FastAPI's own telemetry starts it with the request's
attributes and ends it with the route and status; the service adds its own attributes (ids, model,
images and the steps' durations, as docs/operations.md lists them). This makes such spans with the
SDK as the service does (a provider, a server span, its attributes set in the same calls), hands the
ended spans to a processor that keeps them (as the batch processor queues them), then encodes them
for OTLP as the exporter does (512 to a message, serialised). Three contents: FastAPI's attributes
alone (the floor of any traced FastAPI request), the span as the service records it, and the same with
the steps as four events instead of attributes. Prints the best round's µs per span for making and
ending it, and for encoding it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.util.types import AttributeValue

#: What FastAPI's telemetry sets on a request's span when it starts, and when it ends.
FASTAPI_START: dict[str, AttributeValue] = {
    "url.scheme": "http",
    "http.request.method": "POST",
    "network.protocol.version": "1.1",
    "server.address": "127.0.0.1",
    "server.port": 8000,
    "url.path": "/denoise",
}
FASTAPI_END: dict[str, AttributeValue] = {"http.route": "/denoise", "http.response.status_code": 200}
#: What the service adds: the request's ids, model and images, and its steps' durations (µs).
SERVICE: dict[str, AttributeValue] = {
    "denoise.request_id": "7ff33e15a613ceed0000000000000002",
    "denoise.model": "mnist",
    "denoise.images": 1,
}
STEPS = {"decode": 30, "queue": 200, "onnxruntime": 900, "encode": 40}
EXPORT_BATCH = 512


class Keep(SpanProcessor):
    """Keeps every ended span (the batch processor's queue, without its thread)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def fastapi_only(span: trace.Span) -> None:
    pass


def as_attributes(span: trace.Span) -> None:
    span.set_attributes(SERVICE)
    for step, took in STEPS.items():
        span.set_attributes({f"denoise.{step}_us": took})


def as_events(span: trace.Span) -> None:
    span.set_attributes(SERVICE)
    for step, took in STEPS.items():
        span.add_event(step, {"denoise.duration_us": took}, timestamp=time.time_ns())


CONTENTS: dict[str, Callable[[trace.Span], None]] = {
    "FastAPI's attributes alone": fastapi_only,
    "as the service records it (steps as attributes)": as_attributes,
    "the steps as events": as_events,
}


def measure(record: Callable[[trace.Span], None], spans: int) -> tuple[float, float]:
    """µs per span to make and end it, and to encode it for OTLP."""
    kept = Keep()
    provider = TracerProvider(resource=Resource.create({"process.pid": 1}))
    provider.add_span_processor(kept)
    tracer = provider.get_tracer("fastapi", "0", schema_url="https://opentelemetry.io/schemas/1.44.0")
    started = time.process_time()
    for _ in range(spans):
        span = tracer.start_span("POST /denoise", kind=trace.SpanKind.SERVER, attributes=FASTAPI_START)
        record(span)
        span.set_attributes(FASTAPI_END)
        span.end()
    made = time.process_time()
    for first in range(0, spans, EXPORT_BATCH):
        encode_spans(kept.spans[first : first + EXPORT_BATCH]).SerializeToString()
    encoded = time.process_time()
    return (made - started) / spans * 1e6, (encoded - made) / spans * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    width = max(map(len, CONTENTS))
    for name, record in CONTENTS.items():
        make, encode = min((measure(record, args.spans) for _ in range(args.rounds)), key=sum)
        print(f"{name:{width}}  make and end {make:6.1f} µs  encode {encode:6.1f} µs  total {make + encode:6.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
