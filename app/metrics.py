"""Prometheus metrics, in a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar, cast

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

M = TypeVar("M", Counter, Histogram)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Seconds between two samples of the batchers' queues.
WORK_SAMPLE_S = 0.5
#: The learned scorer's scores are logits: typical inputs lie well below 0, thresholds between -5 and 0.
SCORE_BUCKETS = (-12.0, -8.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._sampled: set[tuple[str, str]] = set()
        #: Each labelled series the hot path updates, looked up once (``labels()`` costs more than an update).
        self._series: dict[tuple[Counter | Histogram, tuple[str, ...]], Counter | Histogram] = {}
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
        # What an autoscaler targets, sampled every WORK_SAMPLE_S in each worker and summed over the live
        # workers (multiprocess mode "livesum").
        self.queue_depth = Gauge(
            "denoise_queue_depth",
            "Batches of work waiting for a graph's batcher, by model and graph",
            ["model", "graph"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            "denoise_model_work_in_flight",
            "Batches of work (a request, or a chunk of a larger one) waiting or running on a model's graphs",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.ready = Gauge(
            "denoise_ready",
            "1 when the worker's models are loaded and warmed, else 0 (the lowest over the live workers)",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        # A surge of unusual inputs (drift, or callers sending the wrong kind of image) shows here.
        self.anomaly_scores = Histogram(
            "denoise_anomaly_score",
            "Anomaly scores of image inputs (higher: less like the training data), by model",
            ["model"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.flagged = Counter(
            "denoise_flagged_images",
            "Image inputs whose anomaly score is above the model's threshold, by model",
            ["model"],
            registry=self.registry,
        )
        self.model_changes = Counter(
            "denoise_model_changes",
            "Model versions put in service (loaded), refused (the old one serving on) and taken out (unloaded), "
            "by model, in every worker",
            ["model", "change"],
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

    def observe_work(self, ready: bool, work: list[tuple[str, str, int, int]]) -> None:
        """Readiness and the batchers' state (model, graph, waiting, waiting or running), sampled: a request
        pays nothing for them."""
        self.ready.set(1 if ready else 0)
        in_flight: dict[str, int] = {}
        graphs: set[tuple[str, str]] = set()
        for model, graph, waiting, pending in work:
            self.queue_depth.labels(model, graph).set(waiting)
            graphs.add((model, graph))
            in_flight[model] = in_flight.get(model, 0) + pending
        for model, count in in_flight.items():
            self.in_flight.labels(model).set(count)
        for model, graph in self._sampled - graphs:  # models taken out of service since the last sample
            self.queue_depth.labels(model, graph).set(0)
            if model not in in_flight:
                self.in_flight.labels(model).set(0)
        self._sampled = graphs

    def _labelled(self, metric: M, *labels: str) -> M:
        series = self._series.get((metric, labels))
        if series is None:
            series = self._series[metric, labels] = metric.labels(*labels)
        return cast(M, series)

    def observe_scores(self, model: str, scores: np.ndarray, flagged: int) -> None:
        histogram = self._labelled(self.anomaly_scores, model)
        for score in scores.tolist():
            histogram.observe(score)
        if flagged:
            self._labelled(self.flagged, model).inc(flagged)

    def observe_batch(self, model: str, graph: str, size: int) -> None:
        self._labelled(self.batch_size, model, graph).observe(size)
        self._labelled(self.images, model, graph).inc(size)

    def observe_request(
        self, endpoint: str, model: str, status: int | str, seconds: float, protocol: str = "rest", error: bool = False
    ) -> None:
        """One request; HTTP statuses of 400 and above count as errors, other protocols say so with ``error``."""
        self._labelled(self.requests, endpoint, model, str(status), protocol).inc()
        self._labelled(self.latency, endpoint, model, protocol).observe(seconds)
        if error or (isinstance(status, int) and status >= 400):
            self.errors.labels(endpoint, str(status), protocol).inc()

    def exposition(self) -> bytes:
        """The metrics text; with several workers, every worker's values summed (multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
