"""The requests the CPU benchmarks send (``bench.cpu --request``, ``bench.profile --request``), by
name, and how to send one over and over: wrk for HTTP, h2load for gRPC."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import (
    GRPC_INFER_PATH,
    SAMPLE,
    grpc_failures,
    grpc_png_body,
    h2load_grpc,
    multipart,
    png_pixels,
    v2_body,
    wrk,
)
from tests.server import free_port

CONNECTIONS = 32


@dataclass(frozen=True)
class Workload:
    """One request, sent over and over by wrk (by h2load, for gRPC)."""

    path: str
    body: Path
    content_type: str
    connections: int = CONNECTIONS
    images: int = 1
    #: One more header wrk sends (the V2 binary body's ``Inference-Header-Content-Length``).
    header: tuple[str, str] | None = None
    #: Sent as unary gRPC calls by h2load to this port of our service, not over HTTP/1.1 by wrk.
    grpc_port: int | None = None

    @property
    def env(self) -> dict[str, str]:
        """What our service needs set to answer it."""
        return {} if self.grpc_port is None else {"DENOISE_GRPC_PORT": str(self.grpc_port)}


SINGLE_IMAGE = Workload("/denoise", SAMPLE, "image/png")
#: What ``--request`` names.
REQUESTS = ("denoise", "encode", "v2-png", "v2-json", "grpc", "batch256")


def workload(request: str, work: Path) -> Workload:
    """The request named ``request`` (one of :data:`REQUESTS`), its body written under ``work``."""
    if request == "denoise":
        return SINGLE_IMAGE
    if request == "encode":
        return Workload("/encode", SAMPLE, "image/png")
    if request == "v2-png":
        png = SAMPLE.read_bytes()
        body = work / "v2-png.body"
        header = v2_body(body, "png", "BYTES", [1], len(png).to_bytes(4, "little") + png)
        return Workload("/v2/models/mnist/infer", body, "application/octet-stream", header=header)
    if request == "grpc":
        body = grpc_png_body(work / "grpc.body")
        return Workload(GRPC_INFER_PATH, body, "application/grpc", grpc_port=free_port())
    if request == "batch256":
        body = work / "batch256.body"
        return Workload("/denoise", body, multipart(256, body), connections=2, images=256)
    if request == "v2-json":
        pixels = np.asarray(png_pixels(SAMPLE.read_bytes()), dtype=np.float32) / 255
        tensor = {"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": pixels.ravel().tolist()}
        body = work / "v2.json"
        body.write_text(json.dumps({"inputs": [tensor]}))
        return Workload("/v2/models/mnist-autoencoder/infer", body, "application/json")
    raise ValueError(f"unknown request {request!r}; one of {', '.join(REQUESTS)}")


def sender(url: str, load: Workload, connections: int | None = None) -> Callable[..., dict[str, Any]]:
    """``load`` sent to our service at ``url`` (over ``connections``, or the load's own), as a function of
    ``seconds`` returning wrk's figures (:func:`bench.load.wrk`; h2load's for gRPC, the same keys)."""
    connections = connections or load.connections
    if load.grpc_port is None:
        return partial(wrk, f"{url}{load.path}", load.body, load.content_type, connections, header=load.header)
    return partial(_grpc_calls, url, load, connections)


def _grpc_calls(url: str, load: Workload, connections: int, seconds: float) -> dict[str, Any]:
    """h2load's figures for ``load``, the calls answered with a gRPC error counted in ``non_2xx`` from the
    ``/metrics`` of the service at ``url`` (none counted where ``url`` is empty: a peer without them)."""
    failed_before = grpc_failures(url) if url else 0
    result = h2load_grpc(f"http://127.0.0.1:{load.grpc_port}{load.path}", load.body, connections, seconds)
    if url:
        result["non_2xx"] += grpc_failures(url) - failed_before
    return result
