"""Server CPU per request, our service against the lean script: ``python -m bench.cpu [--rounds 3] [--before REV]``.

Both serve single-image ``/denoise`` to wrk at 32 connections, in alternating rounds on the same
machine (the load generator shares the cores, so requests/s alone would mislead); each round
measures the service's CPU time from /proc over every process of it. Prints each round and the
means: CPU per request, requests/s, p99, our service's images per ONNX Runtime call (from its
``/metrics``), and the ratio of the lean script's CPU per request to ours.
``--request`` measures another request of our service (the lean script serves only the first), one
of :data:`bench.requests.REQUESTS`: ``denoise`` (the default), ``encode`` (one PNG to ``/encode``,
latents back as JSON), ``v2-png`` (one PNG as a V2 binary ``BYTES`` tensor to ``mnist``), ``v2-json``
(one image as V2 JSON ``data`` to ``mnist-autoencoder``, its output as JSON), ``grpc`` (one PNG to
``mnist`` over gRPC, from h2load at 32 connections), ``batch256`` (a 256-PNG multipart ``/denoise`` at
2 connections; CPU per image as well).
``--before REV`` adds the service at another commit (a git worktree of it) to the same rounds: a change's
before and after, measured together; ``--env NAME=VALUE`` adds it with settings changed; ``--floor`` adds
the lean script on the int8 graph and a bare ASGI app (bench/peers/bare_asgi.py); with ``--request grpc``,
bench/peers/grpc_floor.py (the same work behind grpcio's server).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.profile import cpu_seconds, session_pids
from bench.requests import REQUESTS, SINGLE_IMAGE, Workload, sender, workload
from bench.services import FLOAT32_GRAPH, INT8_GRAPH, checkout, grpc_ready, peer_process, wait_for_workers
from tests.server import REPO, free_port, running_server


@contextmanager
def ours(
    work: Path, env: dict[str, str] | None = None, name: str = "ours", source: Path = REPO
) -> Iterator[tuple[str, list[int]]]:
    """The service as shipped (with ``env`` added; from ``source``, another checkout, for an A/B); its
    URL and every process's pid."""
    log = work / f"{name}.log"
    with log.open("wb") as stderr, running_server(env or {}, stderr=stderr, source=source) as (url, process):
        wait_for_workers(log)
        yield url, session_pids(process.pid)


@contextmanager
def uvicorn_app(work: Path, target: str, env: dict[str, str], ready: str, name: str) -> Iterator[tuple[str, list[int]]]:
    """``target`` (``module:app``) under uvicorn with two workers, as the peers run; its URL and pids."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", target, "--workers", "2", "--port", str(port), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    with peer_process(command, env, work / f"{name}.log", f"{url}{ready}") as process:
        yield url, session_pids(process.pid)


def lean(work: Path, graph: Path = FLOAT32_GRAPH, name: str = "lean") -> AbstractContextManager[tuple[str, list[int]]]:
    """The lean script (bench/peers/lean_fastapi.py) serving ``graph``."""
    return uvicorn_app(work, "bench.peers.lean_fastapi:app", {"LEAN_MODEL": str(graph)}, "/docs", name)


@contextmanager
def grpc_floor(work: Path, port: int) -> Iterator[tuple[str, list[int]]]:
    """The gRPC door's floor (bench/peers/grpc_floor.py, two processes, the int8 graph) on ``port``; no
    HTTP URL (it has no ``/metrics``), and its pids."""
    command = [sys.executable, "-m", "bench.peers.grpc_floor", str(port), "2"]
    ready = partial(grpc_ready, f"127.0.0.1:{port}")
    with peer_process(command, {"LEAN_MODEL": str(INT8_GRAPH)}, work / "grpc-floor.log", ready) as process:
        yield "", session_pids(process.pid)


def bare(work: Path) -> AbstractContextManager[tuple[str, list[int]]]:
    """The floor (bench/peers/bare_asgi.py): the lean script's work on the int8 graph in a bare ASGI app."""
    return uvicorn_app(work, "bench.peers.bare_asgi:app", {"LEAN_MODEL": str(INT8_GRAPH)}, "/health", "bare")


BATCH_CALLS, BATCH_IMAGES = "denoise_inference_batch_size_count", "denoise_inference_batch_size_sum"


def onnxruntime_calls(url: str) -> tuple[float, float] | None:
    """The ONNX Runtime calls our service has made to ``mnist``'s autoencoder so far, and the images in
    them (``denoise_inference_batch_size`` on its ``/metrics``); None for a service without it (a peer)."""
    try:
        response = httpx.get(f"{url}/metrics", timeout=5)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    series = {"model": "mnist", "graph": "autoencoder"}
    for family in text_string_to_metric_families(response.text):
        if family.name == "denoise_inference_batch_size":
            found = {sample.name: sample.value for sample in family.samples if sample.labels == series}
            if BATCH_CALLS in found:
                return found[BATCH_CALLS], found[BATCH_IMAGES]
    return None


def measure(url: str, pids: list[int], seconds: float, load: Workload = SINGLE_IMAGE) -> dict[str, float]:
    """One measured run of ``load`` (single-image ``/denoise`` at 32 connections unless said): the
    service's CPU per request (and per image, for a batch), requests/s, p99 and errors, and (for our
    service) the images per ONNX Runtime call."""
    run = sender(url, load)
    run(seconds=2)  # warm
    calls_before = onnxruntime_calls(url)  # None for a peer: it has no /metrics
    before = cpu_seconds(pids)
    result: dict[str, Any] = run(seconds=seconds)
    used = cpu_seconds(pids) - before
    figures = {
        "cpu_ms_per_request": used / result["requests"] * 1000,
        "requests_per_s": result["requests"] / (result["duration_us"] / 1e6),
        "p99_ms": result["p99_us"] / 1000,
        "errors": result["non_2xx"] + result["timeout"],
    }
    if load.images > 1:
        figures["cpu_us_per_image"] = used / (result["requests"] * load.images) * 1e6
    calls_after = onnxruntime_calls(url)
    if calls_before is not None and calls_after is not None and calls_after[0] > calls_before[0]:
        figures["images_per_call"] = (calls_after[1] - calls_before[1]) / (calls_after[0] - calls_before[0])
    return figures


Service = Callable[[Path], AbstractContextManager[tuple[str, list[int]]]]


def alternate(
    services: dict[str, Service], work: Path, rounds: int, seconds: float, load: Workload = SINGLE_IMAGE
) -> dict[str, dict[str, float]]:
    """Measure each service in turn (started for its slot, stopped after it), ``rounds`` times, under
    ``load``; print every round and the means, and return the means by service."""
    width = max(map(len, services))
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in services}
    for number in range(rounds):
        for name, start in services.items():
            with start(work) as (url, pids):
                figures[name].append(measure(url, pids, seconds, load))
            shown = json.dumps({k: round(v, 3) for k, v in figures[name][-1].items()})
            print(f"round {number + 1} {name:{width}} {shown}", flush=True)
    means = {
        name: {key: float(np.mean([r[key] for r in runs])) for key in runs[0] if all(key in r for r in runs)}
        for name, runs in figures.items()
    }
    for name, mean in means.items():
        per_image = f" ({mean['cpu_us_per_image']:.0f} µs/image)" if "cpu_us_per_image" in mean else ""
        per_call = f"  {mean['images_per_call']:.1f} images per ONNX Runtime call" if "images_per_call" in mean else ""
        print(
            f"{name:{width}} CPU {mean['cpu_ms_per_request']:.3f} ms/request{per_image}"
            f"  {mean['requests_per_s']:.0f} requests/s  p99 {mean['p99_ms']:.2f} ms"
            f"  errors {mean['errors']:.0f}{per_call}"
        )
    return means


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per service per round")
    parser.add_argument("--before", metavar="REV", help="also measure the service at this commit")
    parser.add_argument(
        "--env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="also measure the service with this environment variable set (repeatable: all of them at once)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the lean script serving the int8 graph, and a bare ASGI app (no framework) doing only"
        " the HTTP exchange, the PNG codec and one int8 call: how much of the lead is the model, and how far"
        " the stack around a request could go (with --request grpc: bench/peers/grpc_floor.py, the same work over"
        " grpcio)",
    )
    parser.add_argument(
        "--request",
        choices=REQUESTS,
        default="denoise",
        help="the request measured (the lean script is measured with the default only)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None or (args.request == "grpc" and shutil.which("h2load") is None):
        print("needs wrk (and h2load for gRPC): apt-get install wrk nghttp2-client", file=sys.stderr)
        return 2
    if args.floor and args.request not in ("denoise", "grpc"):
        parser.error("--floor measures single-image /denoise or gRPC only")
    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    load = workload(args.request, work)
    services: dict[str, Service] = {"ours": partial(ours, env=load.env)}
    if args.request == "denoise":
        services["lean script"] = lean
    with ExitStack() as stack:
        if args.before:
            tree = stack.enter_context(checkout(args.before, work))
            services[f"ours at {args.before}"] = partial(ours, env=load.env, name="before", source=tree)
        if args.env:
            if malformed := [setting for setting in args.env if "=" not in setting]:
                parser.error(f"--env takes NAME=VALUE, not {', '.join(malformed)}")
            env = dict(setting.partition("=")[::2] for setting in args.env)
            services[f"ours with {' '.join(args.env)}"] = partial(ours, env={**load.env, **env}, name="env")
        if args.floor and load.grpc_port is not None:
            services["gRPC floor, int8 graph"] = partial(grpc_floor, port=load.grpc_port)
        elif args.floor:
            services["lean script, int8 graph"] = partial(lean, graph=INT8_GRAPH, name="lean-int8")
            services["bare ASGI, int8 graph"] = bare
        means = alternate(services, work, args.rounds, args.seconds, load)
    for name in means:
        if "lean script" in means and name != "lean script":
            ratio = means["lean script"]["cpu_ms_per_request"] / means[name]["cpu_ms_per_request"]
            print(f"lean script's CPU per request / {name}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
