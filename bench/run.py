"""Throughput and latency of the service, side by side with the in-process ceiling, the peers users
would pick instead and a naive service.

    python -m bench.run [--duration 8] [--overload-duration 10] [--out bench/results]

Everything runs on this machine, the load generator (wrk) included, and only targets 127.0.0.1.
The machine is noisy: ratios from one run are what counts. Each scenario has an id; the table prints
its name, and the checks look rows up by id.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.load import (
    SAMPLE,
    LivenessProbe,
    Row,
    in_process,
    machine,
    multipart,
    png_pixels,
    row,
    v2_body,
    wrk,
)
from bench.requests import sender, workload
from bench.services import (
    FLOAT32_GRAPH,
    keras_model_for_naive,
    litserve_service,
    naive_service,
    our_service,
    reference_onnx,
    served_graph,
    triton_service,
    uvicorn_app,
    wait_for_quiet,
)

REPO = Path(__file__).resolve().parents[1]
PNG_TYPE = "image/png"
#: Seconds between the end of the overload and the recovery run.
RECOVERY_PAUSE_S = 2
#: Each scenario's id and the name the table prints.
SCENARIOS = {
    "denoise": "denoise",
    "denoise-b64": "denoise batch 64",
    "denoise-b256": "denoise batch 256",
    "v2-png": "v2 binary png",
    "v2-b256": "v2 binary batch 256",
    "grpc-png": "grpc png",
    "encode": "encode",
    "reconstruct": "reconstruct",
    "overload": "denoise overload",
    "recovery": "denoise after overload",
    "ours": "denoise vs peers",
    "ours-float32": "denoise float32 vs peers",
    "ours-scores-off": "denoise, scores off",
    "lean": "lean fastapi script",
    "litserve": "litserve",
    "triton": "triton (pytriton)",
    "naive": "naive keras service",
}
#: The scenarios measured in the interleaved peer rounds whose latencies the checks compare.
PEER_IDS = ("ours", "ours-float32", "lean", "litserve", "triton")


@dataclass
class Bench:
    """One run's working state: its folder, the run length, the rows and what else it measured."""

    work: Path
    seconds: float
    threads: int
    rows: list[Row] = field(default_factory=list)
    ceiling: dict[str, float] = field(default_factory=dict)
    access_lines: dict[str, int] = field(default_factory=dict)
    overload: dict[str, Any] = field(default_factory=dict)

    def load(
        self,
        scenario: str,
        url: str,
        body: Path,
        content_type: str,
        concurrency: int,
        images: int = 1,
        seconds: float | None = None,
        header: tuple[str, str] | None = None,
    ) -> Row:
        result = wrk(url, body, content_type, concurrency, seconds or self.seconds, header=header)
        measured = row(scenario, SCENARIOS[scenario], result, concurrency, images)
        self.rows.append(measured)
        print(measured, flush=True)
        return measured


@dataclass(frozen=True)
class Peer:
    """A service measured in the interleaved rounds: how to start it for round ``n``, and what to send."""

    scenario: str
    start: Callable[[Bench, int], AbstractContextManager[str]]
    path: str
    body: Callable[[Bench], Path]
    content_type: str = PNG_TYPE
    header: Callable[[Bench], tuple[str, str] | None] = lambda bench: None


def _ours(name: str, env: dict[str, str]) -> Callable[[Bench, int], AbstractContextManager[str]]:
    return lambda bench, n: our_service(
        bench.work, f"{name}-{n}", {"DENOISE_GRPC_PORT": "0", **env}, bench.access_lines
    )


def _sample(bench: Bench) -> Path:
    return SAMPLE


def _litserve_body(bench: Bench) -> Path:
    body = bench.work / "litserve.json"
    body.write_text(json.dumps({"png": base64.b64encode(SAMPLE.read_bytes()).decode("ascii")}))
    return body


def _triton_header(bench: Bench) -> tuple[str, str]:
    png = SAMPLE.read_bytes()
    return v2_body(bench.work / "triton-png.body", "png", "BYTES", [1, 1], len(png).to_bytes(4, "little") + png)


#: Ours as shipped, on the float32 graph the peers serve, and with anomaly scores off (what the score
#: costs); then what users would pick instead, each serving the committed float32 graph.
PEERS = (
    Peer("ours", _ours("vs-peers", {}), "/denoise", _sample),
    Peer("ours-float32", _ours("vs-peers-float32", {"DENOISE_INT8": "false"}), "/denoise", _sample),
    Peer("ours-scores-off", _ours("scores-off", {"DENOISE_ANOMALY_SCORES": "false"}), "/denoise", _sample),
    Peer(
        "lean",
        lambda bench, n: uvicorn_app(
            "bench.peers.lean_fastapi:app", {"LEAN_MODEL": str(FLOAT32_GRAPH)}, bench.work / f"lean-{n}.log", workers=2
        ),
        "/denoise",
        _sample,
    ),
    Peer(
        "litserve",
        lambda bench, n: litserve_service(bench.work / f"litserve-{n}.log"),
        "/predict",
        _litserve_body,
        "application/json",
    ),
    Peer(
        "triton",
        lambda bench, n: triton_service(bench.work / f"triton-{n}.log"),
        "/v2/models/denoise/infer",
        lambda bench: bench.work / "triton-png.body",
        "application/octet-stream",
        _triton_header,
    ),
)


def measure_ceilings(bench: Bench, served: Path) -> None:
    """In-process images/s of the graphs; the model's cost against the reference network is measured in
    turn with it, three times, and averaged."""
    threads = bench.threads
    bench.ceiling.update(
        autoencoder_b1=in_process(FLOAT32_GRAPH, 1, 3, threads),
        served_b1=in_process(served, 1, 3, threads),
        served_b64=in_process(served, 64, 3, threads),
    )
    reference = reference_onnx()
    pairs = [(in_process(FLOAT32_GRAPH, 64, 2, threads), in_process(reference, 64, 2, threads)) for _ in range(3)]
    bench.ceiling["autoencoder_b64"] = float(np.mean([ours for ours, _ in pairs]))
    bench.ceiling["reference_b64"] = float(np.mean([seeds for _, seeds in pairs]))
    print(f"in-process images/s: {json.dumps({k: round(v) for k, v in bench.ceiling.items()})}", flush=True)


def measure_our_service(bench: Bench, served: Path, overload_seconds: float) -> None:
    """Every front door of our service as shipped, then an overload and the recovery from it."""
    work, threads = bench.work, bench.threads
    batch_types = {n: multipart(n, work / f"batch{n}.body") for n in (64, 256)}
    grpc = workload("grpc", work)  # one PNG to mnist over gRPC, from h2load
    with our_service(work, "main", grpc.env, bench.access_lines) as url:
        latent = work / "latent.json"
        latent.write_bytes(
            httpx.post(f"{url}/encode", content=SAMPLE.read_bytes(), headers={"content-type": PNG_TYPE}).content
        )
        for concurrency in (1, 8, 32, 128):
            bench.load("denoise", f"{url}/denoise", SAMPLE, PNG_TYPE, concurrency)
        bench.load("denoise-b64", f"{url}/denoise", work / "batch64.body", batch_types[64], 2, images=64)
        # The batch-256 ceilings (the graph we serve, and the float32 graph) are measured right before and
        # right after the HTTP run and averaged, so that the machine's drift does not skew the ratios.
        before = {graph: in_process(graph, 256, 3, threads) for graph in (served, FLOAT32_GRAPH)}
        bench.load("denoise-b256", f"{url}/denoise", work / "batch256.body", batch_types[256], 2, images=256)
        after = {graph: in_process(graph, 256, 3, threads) for graph in (served, FLOAT32_GRAPH)}
        bench.ceiling["served_b256"] = (before[served] + after[served]) / 2
        bench.ceiling["autoencoder_b256"] = (before[FLOAT32_GRAPH] + after[FLOAT32_GRAPH]) / 2
        # The Open Inference Protocol: one PNG as binary BYTES; 256 float32 images as a binary tensor.
        v2_png = workload("v2-png", work)
        bench.load("v2-png", f"{url}{v2_png.path}", v2_png.body, v2_png.content_type, 32, header=v2_png.header)
        pixels = np.asarray(png_pixels(SAMPLE.read_bytes()), dtype=np.float32)
        images = np.repeat(pixels[None, ..., None] / 255, 256, axis=0)
        octets = "application/octet-stream"
        v2_batch = v2_body(work / "v2-b256.body", "image", "FP32", list(images.shape), images.tobytes())
        before_v2 = in_process(served, 256, 3, threads)
        infer = f"{url}/v2/models/mnist-autoencoder/infer"
        bench.load("v2-b256", infer, work / "v2-b256.body", octets, 2, images=256, header=v2_batch)
        bench.ceiling["served_b256_around_v2"] = (before_v2 + in_process(served, 256, 3, threads)) / 2
        # Calls answered with a gRPC error are counted from the service's metrics (bench.requests.sender).
        result = sender(url, grpc)(seconds=bench.seconds)
        bench.rows.append(row("grpc-png", SCENARIOS["grpc-png"], result, grpc.connections, 1))
        print(bench.rows[-1], flush=True)
        bench.load("encode", f"{url}/encode", SAMPLE, PNG_TYPE, 32)
        bench.load("reconstruct", f"{url}/reconstruct", latent, "application/json", 32)

        probe = LivenessProbe(url)
        probe.start()
        time.sleep(1)
        overload = bench.load("overload", f"{url}/denoise", SAMPLE, PNG_TYPE, 512, seconds=overload_seconds)
        latencies = probe.stop()
        time.sleep(RECOVERY_PAUSE_S)  # the flood's last connections drain
        recovery = bench.load("recovery", f"{url}/denoise", SAMPLE, PNG_TYPE, 8, seconds=3)
        bench.overload = {
            "shed_503": overload.non_2xx,
            "liveness_probes": len(latencies),
            "liveness_max_ms": max(latencies),
            "liveness_p99_ms": float(np.percentile(latencies, 99)),
            "recovery_errors": recovery.errors,
        }
        print(bench.overload, flush=True)


def measure_peers(bench: Bench, rounds: int = 2) -> None:
    """The peers interleaved with ours, ``rounds`` times, the same load generator and PNG. Each runs alone
    while it is measured (an idle LitServe polls its queues at about 30% of a core, which would slow
    whichever service was measured beside it) and once the machine is quiet again."""
    for number in range(rounds):
        for peer in PEERS:
            body, header = peer.body(bench), peer.header(bench)
            with peer.start(bench, number) as base:
                wait_for_quiet()
                for concurrency in (32, 1):
                    bench.load(peer.scenario, f"{base}{peer.path}", body, peer.content_type, concurrency, header=header)


def measure_naive(bench: Bench) -> str:
    """The naive service at 1 and 32 connections; what weights it ran."""
    keras_path, note = keras_model_for_naive(bench.work)
    body_type = multipart(1, bench.work / "single.multipart")
    with naive_service(keras_path, bench.work / "naive.log") as naive_url:
        for concurrency in (1, 32):
            bench.load("naive", f"{naive_url}/denoise", bench.work / "single.multipart", body_type, concurrency)
    return note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load run")
    parser.add_argument("--overload-duration", type=float, default=10.0, help="seconds at concurrency 512")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="folder for results.json and the plot"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("h2load") is None:
        print("needs wrk and h2load: apt-get install wrk nghttp2-client", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    bench = Bench(Path(tempfile.mkdtemp(prefix="bench-")), args.duration, info["cores"])
    served = served_graph()
    print(f"machine: {info}; our service runs {served.name}", flush=True)
    measure_ceilings(bench, served)
    measure_our_service(bench, served, args.overload_duration)
    measure_peers(bench)
    naive_note = measure_naive(bench)
    print(f"access-log lines written by our service: {bench.access_lines}", flush=True)
    check = checks(bench.rows, bench.ceiling, bench.overload)
    results: dict[str, Any] = {
        "machine": info,
        "command": " ".join(["python", "-m", "bench.run", *sys.argv[1:]]),
        "served_autoencoder": served.name,
        "in_process_images_per_s": bench.ceiling,
        "access_log_lines": bench.access_lines,
        "overload": bench.overload,
        "naive_model": naive_note,
        "rows": [asdict(r) for r in bench.rows],
        "checks": check,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(bench.rows, bench.ceiling, check)
    plot(bench.rows, args.out / "throughput_latency.png")
    print(f"\nresults: {args.out / 'results.json'}, plot: {args.out / 'throughput_latency.png'}")
    return 0


def _mean(rows: list[Row], scenario: str, concurrency: int, field: str) -> float:
    return float(np.mean([getattr(r, field) for r in rows if r.scenario == scenario and r.concurrency == concurrency]))


def _rps(rows: list[Row], scenario: str, concurrency: int) -> float:
    return _mean(rows, scenario, concurrency, "requests_per_s")


def _find(rows: list[Row], scenario: str, concurrency: int) -> Row:
    return next(r for r in rows if r.scenario == scenario and r.concurrency == concurrency)


def checks(rows: list[Row], ceiling: dict[str, float], overload: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets in bench/README.md are judged by, each from rows found by scenario id."""
    c32, c1 = _find(rows, "denoise", 32), _find(rows, "denoise", 1)
    batch256 = _find(rows, "denoise-b256", 2)
    return {
        "c32_vs_naive_rps_ratio": c32.requests_per_s / _find(rows, "naive", 32).requests_per_s,
        "c32_p99_ms": c32.p99_ms,
        "c32_errors": c32.errors,
        "c1_p50_ms": c1.p50_ms,
        "batch256_fraction_of_served_graph_ceiling": batch256.images_per_s / ceiling["served_b256"],
        "batch256_fraction_of_float32_graph_ceiling": batch256.images_per_s / ceiling["autoencoder_b256"],
        "int8_speedup_in_process_b1_b64": [
            ceiling["served_b1"] / ceiling["autoencoder_b1"],
            ceiling["served_b64"] / ceiling["autoencoder_b64"],
        ],
        "model_cost_vs_reference_b64": ceiling["reference_b64"] / ceiling["autoencoder_b64"],
        "anomaly_score_cost_c1": 1 - _rps(rows, "ours", 1) / _rps(rows, "ours-scores-off", 1),
        "anomaly_score_cost_c32": 1 - _rps(rows, "ours", 32) / _rps(rows, "ours-scores-off", 32),
        "v2_batch256_fraction_of_ceiling": _find(rows, "v2-b256", 2).images_per_s / ceiling["served_b256_around_v2"],
        "v2_and_grpc_errors": _find(rows, "v2-png", 32).errors + _find(rows, "grpc-png", 32).errors,
        "c32_vs_lean_rps_ratio": _rps(rows, "ours", 32) / _rps(rows, "lean", 32),
        "c32_float32_vs_lean_rps_ratio": _rps(rows, "ours-float32", 32) / _rps(rows, "lean", 32),
        "c32_vs_litserve_rps_ratio": _rps(rows, "ours", 32) / _rps(rows, "litserve", 32),
        "c32_vs_triton_rps_ratio": _rps(rows, "ours", 32) / _rps(rows, "triton", 32),
        "c32_p99_ms_ours_and_peers": {SCENARIOS[id_]: _mean(rows, id_, 32, "p99_ms") for id_ in PEER_IDS},
        "c1_p50_ms_ours_and_peers": {SCENARIOS[id_]: _mean(rows, id_, 1, "p50_ms") for id_ in PEER_IDS},
        "overload_shed_503": overload["shed_503"],
        "liveness_max_ms_under_overload": overload["liveness_max_ms"],
        "recovered_without_errors": overload["recovery_errors"] == 0,
    }


def print_table(rows: list[Row], ceiling: dict[str, float], check: dict[str, Any]) -> None:
    naive1 = _find(rows, "naive", 1).requests_per_s
    print(
        f"\n{'run':<24}{'conc':>6}{'img/req':>8}{'req/s':>10}{'img/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'x naive c1':>11}"
    )
    for r in rows:
        print(
            f"{r.name:<24}{r.concurrency:>6}{r.images_per_request:>8}{r.requests_per_s:>10.0f}{r.images_per_s:>10.0f}"
            f"{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}{r.requests_per_s / naive1:>11.1f}"
        )
    print("\nin-process ceiling (images/s): " + ", ".join(f"{k} {v:.0f}" for k, v in ceiling.items()))
    print("checks: " + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in check.items()}))


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for scenario, style in (("denoise", "o-"), ("naive", "s--")):
        points = sorted((r for r in rows if r.scenario == scenario), key=lambda r: r.concurrency)
        xs = [r.concurrency for r in points]
        left.plot(xs, [r.requests_per_s for r in points], style, label=SCENARIOS[scenario])
        right.plot(xs, [r.p99_ms for r in points], style, label=SCENARIOS[scenario])
    for ax, label in ((left, "requests/s"), (right, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Single-image /denoise on one 2-core machine (wrk on the same machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
