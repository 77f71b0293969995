"""An OTLP/gRPC trace collector on a loopback port, keeping what it is sent (for tests and the bench)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the protocol's name)
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> int:
        return sum(
            len(scope.spans)
            for request in list(self.requests)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )

    def pids(self, trace_ids: set[str]) -> set[int]:
        """The processes (resource attribute ``process.pid``) that exported spans of ``trace_ids``."""
        found = set()
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    if any(span.trace_id.hex() in trace_ids for span in scope.spans):
                        found.add(attributes["process.pid"].int_value)
        return found


@contextmanager
def otlp_collector() -> Iterator[tuple[Collector, str]]:
    """A collector and its endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collector, f"http://127.0.0.1:{port}"
    finally:
        server.stop(None)
