"""Tracing over real HTTP and gRPC calls: a caller's W3C ``traceparent`` continues through the own API,
V2 REST and gRPC; a span for the request, with the durations of a single image's decode, queue wait,
ONNX Runtime call and encode as its attributes (spans for a multi-image request's decode and encode);
a span for an ONNX Runtime call that merges several requests, linked to every one of them; the trace
id on the access line; health and metrics untraced.

The service runs in this process (uvicorn on a loopback port, the real protocol and gRPC server) so
that the SDK's in-memory exporter sees its spans; a user's set-ups (the console exporter, OTLP from
two workers) run the real ``python -m app`` configured by the environment only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import uvicorn
from fastapi import FastAPI, Response
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from app import tracing
from app.main import create_app
from app.runtime.batcher import BATCH_SPAN
from tests.conftest import MODEL, digit, png, service_settings
from tests.docs import blocks
from tests.otlp import otlp_collector
from tests.server import TEST_SETTINGS, free_port, poll, running_server

PNG = {"content-type": "image/png"}


@dataclass
class Traced:
    url: str
    grpc_address: str
    spans: InMemorySpanExporter

    def trace(self, trace_id: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if _hex(span.context.trace_id) == trace_id]


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def _traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """A caller's ``traceparent``, its trace id and its span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    """The service in this process, traced into an in-memory exporter; a 20 ms batching window, so
    that every request queues (and those sent together share a batch)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    grpc_port = free_port()
    app = create_app(service_settings(grpc_port=grpc_port, batch_max_delay_ms=20), tracer_provider=provider)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, http="app.protocol:GuardedHttpToolsProtocol"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    poll(lambda: server.started, 60, "the traced service started")
    try:
        yield Traced(url, f"127.0.0.1:{grpc_port}", spans)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _served(traced: Traced, trace_id: str) -> bool:
    """Whether the request of ``trace_id`` has ended its span."""
    return any(span.kind == SpanKind.SERVER for span in traced.trace(trace_id))


def _by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


STEPS = ("decode", "queue", "onnxruntime", "encode")


def _step_durations(span: ReadableSpan) -> dict[str, int]:
    """The steps timed on a request's span: ``denoise.<step>_us``, by step."""
    assert span.attributes is not None
    return {
        step: int(value)  # type: ignore[arg-type]
        for step in STEPS
        if (value := span.attributes.get(f"denoise.{step}_us")) is not None
    }


def _check_request_trace(spans: list[ReadableSpan], caller_span: str, server_name: str) -> ReadableSpan:
    """The request's span continues the caller's and is its trace's only span here: its single image's
    decode, queue wait, ONNX Runtime call and encode are timed as its attributes, with no events, and
    together took no longer than the request. Returns the request's span."""
    (server,) = spans
    assert server.name == server_name
    assert server.kind == SpanKind.SERVER
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == caller_span
    assert server.attributes is not None
    assert server.attributes["denoise.model"] == MODEL
    assert server.attributes["denoise.images"] == 1
    assert server.events == ()
    assert server.start_time is not None
    assert server.end_time is not None
    durations = _step_durations(server)
    assert set(durations) == set(STEPS)
    assert all(isinstance(server.attributes[f"denoise.{step}_us"], int) for step in STEPS)
    assert min(durations.values()) >= 0
    # The steps run one after the other, within the request (microseconds against nanoseconds).
    assert sum(durations.values()) * 1000 <= server.end_time - server.start_time
    assert durations["onnxruntime"] > 0
    return server


def test_own_api_continues_the_callers_trace(traced: Traced, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="denoise.access")
    traceparent, trace_id, span_id = _traceparent()
    response = httpx.post(f"{traced.url}/denoise", content=png(digit(3)), headers={**PNG, "traceparent": traceparent})
    assert response.status_code == 200
    poll(lambda: any(s.kind == SpanKind.SERVER for s in traced.trace(trace_id)), 10, "the request's span ended")
    server = _check_request_trace(traced.trace(trace_id), span_id, "POST /denoise")
    assert server.attributes is not None
    assert server.attributes["denoise.request_id"] == response.headers["x-request-id"]
    assert _status(server) == 200
    assert _access_line(caplog, response).__dict__["trace_id"] == trace_id


def test_v2_rest_continues_the_callers_trace(traced: Traced) -> None:
    traceparent, trace_id, span_id = _traceparent()
    body = {"inputs": [{"name": "png", "datatype": "BYTES", "shape": [1], "data": [_b64(png(digit(4)))]}]}
    response = httpx.post(f"{traced.url}/v2/models/{MODEL}/infer", json=body, headers={"traceparent": traceparent})
    assert response.status_code == 200, response.text
    poll(lambda: any(s.kind == SpanKind.SERVER for s in traced.trace(trace_id)), 10, "the request's span ended")
    _check_request_trace(traced.trace(trace_id), span_id, "POST /v2/models/{model}/infer")


def test_grpc_continues_the_callers_trace_from_metadata(traced: Traced) -> None:
    traceparent, trace_id, span_id = _traceparent()
    client = triton_grpc.InferenceServerClient(traced.grpc_address)
    try:
        tensor = triton_grpc.InferInput("png", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([png(digit(5))], dtype=np.object_))
        result = client.infer(MODEL, [tensor], headers={"traceparent": traceparent})
    finally:
        client.close()
    assert result.as_numpy("denoised_png") is not None
    poll(lambda: any(s.kind == SpanKind.SERVER for s in traced.trace(trace_id)), 10, "the call's span ended")
    _check_request_trace(traced.trace(trace_id), span_id, "/inference.GRPCInferenceService/ModelInfer")


def test_a_batch_of_images_gets_decode_and_encode_spans(traced: Traced) -> None:
    traceparent, trace_id, _ = _traceparent()
    files = [("file", (f"{i}.png", png(digit(i)), "image/png")) for i in range(3)]
    response = httpx.post(f"{traced.url}/denoise", files=files, headers={"traceparent": traceparent})
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 3
    poll(lambda: _served(traced, trace_id), 10, "the request's span ended")
    named = _by_name(traced.trace(trace_id))
    (server,) = named["POST /denoise"]
    for step in ("decode", "encode"):
        (span,) = named[step]
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id
        assert span.attributes is not None
        assert span.attributes["denoise.images"] == 3
    assert server.events == ()
    assert set(_step_durations(server)) == {"queue", "onnxruntime"}


def test_one_batch_span_is_linked_to_every_request_in_it(traced: Traced) -> None:
    parents = [_traceparent() for _ in range(3)]

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=traced.url) as client:
            return await asyncio.gather(
                *(
                    client.post("/denoise", content=png(digit(i)), headers={**PNG, "traceparent": parent})
                    for i, (parent, _, _) in enumerate(parents)
                )
            )

    assert all(response.status_code == 200 for response in asyncio.run(send()))
    trace_ids = {trace_id for _, trace_id, _ in parents}
    poll(lambda: all(_served(traced, trace_id) for trace_id in trace_ids), 10, "the requests' spans ended")
    requests = {
        span.context.span_id
        for trace_id in trace_ids
        for span in traced.trace(trace_id)
        if span.kind == SpanKind.SERVER
    }
    batches = [s for s in traced.spans.get_finished_spans() if s.name == BATCH_SPAN and s.attributes is not None]
    shared = [b for b in batches if requests <= {link.context.span_id for link in b.links}]
    assert shared, "the three requests sent together did not share one batch"
    (batch,) = shared
    assert batch.attributes is not None
    assert batch.attributes["denoise.requests"] == 3
    assert batch.attributes["denoise.batch_size"] == 3
    # The batch is a span of one of the requests' traces, and linked from the other two.
    assert _hex(batch.context.trace_id) in trace_ids


def test_an_unsampled_callers_trace_is_not_recorded_but_logged(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="denoise.access")
    traceparent, trace_id, _ = _traceparent(sampled=False)
    response = httpx.post(f"{traced.url}/denoise", content=png(digit(6)), headers={**PNG, "traceparent": traceparent})
    assert response.status_code == 200
    assert traced.trace(trace_id) == []
    assert _access_line(caplog, response).__dict__["trace_id"] == trace_id


def test_health_and_metrics_are_not_traced(traced: Traced) -> None:
    traceparent, trace_id, _ = _traceparent()
    for path in ("/health/ready", "/health/live", "/metrics", "/v2/health/ready", "/v2/health/live"):
        assert httpx.get(f"{traced.url}{path}", headers={"traceparent": traceparent}).status_code == 200, path
    client = triton_grpc.InferenceServerClient(traced.grpc_address)
    try:
        assert client.is_server_live(headers={"traceparent": traceparent})
        assert client.is_server_ready(headers={"traceparent": traceparent})
        assert client.is_model_ready(MODEL, headers={"traceparent": traceparent})
    finally:
        client.close()
    # A traced request after them, so that their spans, had there been any, have ended by now.
    after, after_id, _ = _traceparent()
    httpx.post(f"{traced.url}/denoise", content=png(digit(1)), headers={**PNG, "traceparent": after})
    poll(lambda: any(s.kind == SpanKind.SERVER for s in traced.trace(after_id)), 10, "the request's span ended")
    assert traced.trace(trace_id) == []


def test_an_error_is_recorded_on_the_request_span(traced: Traced) -> None:
    traceparent, trace_id, _ = _traceparent()
    response = httpx.post(f"{traced.url}/denoise", content=b"not a png", headers={**PNG, "traceparent": traceparent})
    assert response.status_code == 400
    poll(lambda: any(s.kind == SpanKind.SERVER for s in traced.trace(trace_id)), 10, "the request's span ended")
    (server,) = [s for s in traced.trace(trace_id) if s.kind == SpanKind.SERVER]
    assert _status(server) == 400
    assert server.attributes is not None
    assert server.attributes["denoise.decode_error"] == "UndecodableImage"
    assert set(_step_durations(server)) == {"decode"}  # it failed there: nothing queued, nothing encoded


def _access_line(caplog: pytest.LogCaptureFixture, response: httpx.Response) -> logging.LogRecord:
    """The request's access line (written once its response has gone, so maybe after the client has it)."""

    def lines() -> list[logging.LogRecord]:
        rid = response.headers["x-request-id"]
        return [record for record in caplog.records if getattr(record, "request_id", None) == rid]

    poll(lambda: bool(lines()), 10, "the access line")
    (line,) = lines()
    return line


def _status(span: ReadableSpan) -> object:
    """The HTTP status on a server span (the attribute's name depends on the semantic conventions' version)."""
    assert span.attributes is not None
    return span.attributes.get("http.response.status_code", span.attributes.get("http.status_code"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_console_exporter_set_by_the_environment() -> None:
    """As a user turns it on: ``OTEL_TRACES_EXPORTER=console`` and a service name, nothing else."""
    traceparent, trace_id, _ = _traceparent()
    env = {**TEST_SETTINGS, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "denoise-console-test"}
    with tempfile.TemporaryFile() as stdout:
        with running_server(env, stdout=stdout) as (url, _):
            response = httpx.post(f"{url}/denoise", content=png(digit(2)), headers={**PNG, "traceparent": traceparent})
            assert response.status_code == 200
            httpx.get(f"{url}/health/ready", headers={"traceparent": traceparent})
        stdout.seek(0)
        output = stdout.read().decode()
    spans = [json.loads(block) for block in re.findall(r"^\{\n.*?^\}$", output, re.M | re.S)]
    mine = [span for span in spans if span["context"]["trace_id"] == f"0x{trace_id}"]
    names = {span["name"] for span in mine}
    # Alone on an idle worker with no batching window, the request runs at once: no queue wait.
    assert names == {"POST /denoise"}
    (server,) = mine
    assert server["events"] == []
    timed = {name for name in server["attributes"] if re.fullmatch(r"denoise\.\w+_us", name)}
    assert timed == {"denoise.decode_us", "denoise.onnxruntime_us", "denoise.encode_us"}
    assert all(span["resource"]["attributes"]["service.name"] == "denoise-console-test" for span in mine)
    assert not any("health" in span["name"] for span in spans)


def test_every_worker_exports_over_otlp_as_the_docs_turn_it_on() -> None:
    """docs/operations.md's command (its variables as written, the collector's address put in), with
    two workers: both export, and a caller's sampled traceparent is recorded whatever the ratio."""
    (command,) = blocks("docs/operations.md", "sh", "Tracing")
    documented = dict(re.findall(r"\b(OTEL_[A-Z_]+)=(\S+)", command))
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in documented
    assert command.rstrip().endswith("python -m app")
    sent: set[str] = set()
    with otlp_collector() as (collector, endpoint):
        env = {
            **TEST_SETTINGS,
            **documented,
            "DENOISE_WORKERS": "2",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within the test's patience
        }
        with running_server(env) as (url, _):
            for _ in range(40):  # a connection each: the kernel spreads them over both workers
                traceparent, trace_id, _ = _traceparent()
                sent.add(trace_id)
                response = httpx.post(
                    f"{url}/denoise", content=png(digit(7)), headers={**PNG, "traceparent": traceparent}
                )
                assert response.status_code == 200
            poll(lambda: len(collector.pids(sent)) == 2, 15, "spans from both workers")


def _sampled_first(ratio: float) -> tuple[FastAPI, InMemorySpanExporter, list[bool], list[bool]]:
    """An app traced as the service is (:func:`app.tracing.telemetry`, :class:`app.tracing.CallersContext`)
    whose route notes whether each request has a span and whether it is recorded, with a provider
    sampling ``ratio`` of the traces that start here."""
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    recorded: list[bool] = []
    spanned: list[bool] = []
    app = FastAPI(telemetry=tracing.telemetry(provider))
    app.add_middleware(tracing.CallersContext)

    @app.post("/denoise")
    def route() -> Response:
        recorded.append(trace.get_current_span().is_recording())
        spanned.append(trace.get_current_span().get_span_context().is_valid)
        return Response()

    return app, spans, recorded, spanned


def test_a_request_is_sampled_once_and_an_unsampled_one_gets_no_span() -> None:
    """A trace that starts here is decided once, on the trace id its span then takes: at 50%, half the
    requests are traced (a second, independent decision would leave a quarter)."""
    app, spans, recorded, spanned = _sampled_first(0.5)

    async def send_all() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            for _ in range(400):
                assert (await client.post("/denoise")).status_code == 200

    asyncio.run(send_all())
    exported = spans.get_finished_spans()
    assert 150 <= len(exported) <= 250  # 200 expected; a quarter (100) is 10 standard deviations away
    assert recorded.count(True) == len(exported)  # each recorded request exported its span
    assert spanned == recorded  # and an unsampled one had none, not even an unrecorded one
    assert all(span.kind == SpanKind.SERVER for span in exported)


def test_nothing_is_sampled_at_zero_and_the_callers_decision_is_kept() -> None:
    app, spans, recorded, spanned = _sampled_first(0.0)

    async def send(headers: dict[str, str]) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.post("/denoise", headers=headers)).status_code == 200

    asyncio.run(send({}))
    assert (recorded, spanned, spans.get_finished_spans()) == ([False], [False], ())
    traceparent, trace_id, _ = _traceparent(sampled=True)
    asyncio.run(send({"traceparent": traceparent}))  # a sampled caller's trace continues (parent-based)
    assert recorded == [False, True]
    unsampled, _, _ = _traceparent(sampled=False)
    asyncio.run(send({"traceparent": unsampled}))  # an unsampled caller's context is current, nothing recorded
    assert (recorded[-1], spanned[-1]) == (False, True)
    assert [_hex(span.context.trace_id) for span in spans.get_finished_spans()] == [trace_id]


def test_a_step_timed_twice_on_a_span_adds_up_and_a_failure_names_its_error() -> None:
    """A request queued in several pieces waits several times: its span's ``denoise.queue_us`` is their sum."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    request = provider.get_tracer("test").start_span("request")
    started = time.perf_counter_ns()
    tracing.Timed(request, "queue", started - 3_000_000).end()  # 3 ms ago
    tracing.Timed(request, "queue", started - 2_000_000).end(RuntimeError("lost"))
    request.end()
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    waited = span.attributes["denoise.queue_us"]
    assert isinstance(waited, int)
    assert 5_000 <= waited < 5_000 + (time.perf_counter_ns() - started) // 1000 * 2
    assert span.attributes["denoise.queue_error"] == "RuntimeError"
    assert span.events == ()
