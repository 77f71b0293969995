"""Prometheus metrics, in a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "denoise_requests_total",
            "Requests by endpoint, model, status and protocol (rest: our API; v2: the Open Inference Protocol "
            "over HTTP; grpc: over gRPC, with the gRPC status code)",
            ["endpoint", "model", "status", "protocol"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "denoise_request_duration_seconds",
            "Request latency by endpoint, model and protocol",
            ["endpoint", "model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "denoise_errors_total",
            "Error responses by endpoint, status and protocol",
            ["endpoint", "status", "protocol"],
            registry=self.registry,
        )
        self.deadline_expired = Counter(
            "denoise_deadline_expired_total",
            "Requests whose deadline passed before they could run (not run), by protocol",
            ["protocol"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "denoise_inference_batch_size",
            "Images per ONNX Runtime call by model and graph",
            ["model", "graph"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "denoise_images_total",
            "Images run through a graph by model and graph",
            ["model", "graph"],
            registry=self.registry,
        )

    def observe_batch(self, model: str, graph: str, size: int) -> None:
        self.batch_size.labels(model, graph).observe(size)
        self.images.labels(model, graph).inc(size)

    def observe_request(
        self, endpoint: str, model: str, status: int | str, seconds: float, protocol: str = "rest", error: bool = False
    ) -> None:
        """One request; HTTP statuses of 400 and above count as errors, other protocols say so with ``error``."""
        self.requests.labels(endpoint, model, str(status), protocol).inc()
        self.latency.labels(endpoint, model, protocol).observe(seconds)
        if error or (isinstance(status, int) and status >= 400):
            self.errors.labels(endpoint, str(status), protocol).inc()

    def exposition(self) -> bytes:
        """The metrics text; with several workers, every worker's values summed (multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
