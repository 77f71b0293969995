"""The speed guard, run before committing a change to the request path or a model: ``python -m bench.guard``.

In one run (two to three minutes on 2 cores), it measures:

- the server's CPU per single-image ``/denoise`` request, the service as shipped against the lean
  FastAPI + onnxruntime script (``bench/peers/lean_fastapi.py``), in alternating rounds
  (:mod:`bench.cpu`'s measurement: wrk at 32 connections, CPU from /proc; five rounds, each measuring
  both, one right after the other); the guard needs the median of the rounds' ratios (the lean
  script's CPU per request over ours) to be at least ``--min-ratio`` (default 1.3);
- the shipped model's int8 autoencoder in-process (µs per image at batch 64 on one thread, as the
  service runs it), against the figure committed in ``bench/results/guard.json`` for this CPU model
  (on a CPU with none recorded, the slowest recorded); the guard fails above ``--max-regression``
  (default 10%) over it.

``--gross`` applies the loose limits CI uses on a shared, noisy machine (1.1x and +25%): only a gross
regression fails there. ``--record`` writes this run's int8 figure for this CPU model into
``bench/results/guard.json`` (do it when a model change is meant to change it, and commit the file with
the change; a new model version drops the other CPUs' figures). Exit status 0 when within the limits,
1 when not, 2 when it cannot measure (no wrk).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from bench.cpu import lean, measure, ours
from bench.load import in_process, machine
from denoise_bundle import load_manifest
from tests.server import MODEL, MODELS, REPO

RESULTS = REPO / "bench" / "results" / "guard.json"
#: (least lean/ours CPU per request, most int8 cost over its committed figure). "gross" is what CI fails on:
#: the rounds' ratios have ranged from 1.50x to 2.28x on 2 shared Intel Xeon cores (their medians 1.69x to
#: 1.94x), a single round moving by a fifth, so CI fails only when the service is clearly closer to the lean
#: script than that, or the model clearly slower.
LIMITS = {"strict": (1.3, 0.10), "gross": (1.1, 0.25)}
INT8_BATCH = 64
#: guard.json's int8 figures (µs per image at batch 64 on one thread), one per CPU model (/proc/cpuinfo's
#: model name): a figure measured on one CPU says nothing of another.
FIGURES = "int8_us_per_image_batch64_by_cpu"


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def int8_cost(bundle: Path, seconds: float) -> float:
    """µs per image of the bundle's int8 autoencoder at batch 64 on one thread (the best of three tries)."""
    manifest = load_manifest(bundle)
    if manifest.int8 is None:
        raise SystemExit(f"{bundle} ships no int8 autoencoder")
    graph = bundle / manifest.int8.graph.file
    return min(1e6 / in_process(graph, INT8_BATCH, seconds, 1) for _ in range(3))


def cpu_ratio(rounds: int, seconds: float) -> tuple[dict[str, dict[str, float]], float]:
    """Each service's medians over ``rounds`` rounds, and the median of the rounds' ratios (the lean script's
    CPU per request over ours, both measured in the same round, one right after the other: a ratio of
    neighbours in time, which the machine's drift between rounds does not move). Which service goes first
    alternates from round to round."""
    work = Path(tempfile.mkdtemp(prefix="bench-guard-"))
    services: dict[str, Any] = {"ours": ours, "lean script": lean}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in services}
    ratios = []
    for number in range(rounds):
        order = list(services) if number % 2 == 0 else list(reversed(services))
        for name in order:
            service: AbstractContextManager[tuple[str, list[int]]] = services[name](work)
            with service as (url, pids):
                runs[name].append(measure(url, pids, seconds))
            row = runs[name][-1]
            print(
                f"round {number + 1} {name:12} CPU {row['cpu_ms_per_request']:.3f} ms/request  "
                f"{row['requests_per_s']:.0f} requests/s  p99 {row['p99_ms']:.1f} ms  errors {row['errors']:.0f}",
                flush=True,
            )
        ratios.append(runs["lean script"][-1]["cpu_ms_per_request"] / runs["ours"][-1]["cpu_ms_per_request"])
        print(f"round {number + 1} lean script / ours: {ratios[-1]:.2f}x", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    medians = {name: {key: float(np.median([r[key] for r in rows])) for key in rows[0]} for name, rows in runs.items()}
    return medians, float(np.median(ratios))


def record(recorded: dict[str, Any], model: str, cpu: str, cost: float) -> dict[str, Any]:
    """``recorded`` with this CPU's figure for ``model`` set; figures of other CPUs are kept only while they
    are for the same model."""
    figures = recorded.get(FIGURES, {}) if recorded.get("model") == model else {}
    return {"model": model, FIGURES: {**figures, cpu: {"us": round(cost, 1), "commit": commit()}}}


def committed_figure(recorded: dict[str, Any], cpu: str, cost: float) -> tuple[float, str]:
    """The committed figure to hold this run's int8 cost to, and where it comes from: the one recorded on
    this CPU model; on a CPU with none, the slowest recorded (the check then catches only what would be
    slow on any machine recorded so far); with none at all, this run's own."""
    figures: dict[str, dict[str, Any]] = recorded.get(FIGURES, {})
    if cpu in figures:
        return float(figures[cpu]["us"]), f"{cpu}, {figures[cpu]['commit']}"
    if figures:
        slowest = max(figures, key=lambda name: float(figures[name]["us"]))
        figure = figures[slowest]
        return float(figure["us"]), f"none on {cpu}: the slowest recorded, {slowest}, {figure['commit']}"
    return cost, "none recorded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per service per round")
    parser.add_argument("--gross", action="store_true", help="CI's loose limits (1.1x, +25%%)")
    parser.add_argument("--min-ratio", type=float, help="least lean/ours CPU per request (default 1.3)")
    parser.add_argument("--max-regression", type=float, help="most int8 cost over the committed figure (0.10)")
    parser.add_argument("--record", action="store_true", help=f"write this run's int8 figure to {RESULTS}")
    args = parser.parse_args(argv)
    min_ratio, max_regression = LIMITS["gross" if args.gross else "strict"]
    min_ratio = args.min_ratio if args.min_ratio is not None else min_ratio
    max_regression = args.max_regression if args.max_regression is not None else max_regression
    if shutil.which("wrk") is None:
        print("bench.guard: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    bundle = MODELS / MODEL
    version = load_manifest(bundle).version
    print(f"bench.guard at {commit()}: {MODEL} {version}; limits {min_ratio}x and +{max_regression:.0%}", flush=True)
    cost = int8_cost(bundle, seconds=2.0)
    cpu = machine()["cpu"]
    recorded: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.record:
        recorded = record(recorded, f"{MODEL} {version}", cpu, cost)
        RESULTS.write_text(json.dumps(recorded, indent=2) + "\n")
        print(f"recorded {cost:.0f} µs per image on {cpu} in {RESULTS.relative_to(REPO)}")
    committed, note = committed_figure(recorded, cpu, cost)
    change = cost / committed - 1
    print(
        f"int8 autoencoder, batch {INT8_BATCH}, 1 thread: {cost:.0f} µs per image; committed "
        f"{committed:.0f} ({recorded.get('model', 'none')}, {note}): {change:+.1%}",
        flush=True,
    )
    medians, ratio = cpu_ratio(args.rounds, args.seconds)
    for name, row in medians.items():
        print(
            f"median {name:12} CPU {row['cpu_ms_per_request']:.3f} ms/request  {row['requests_per_s']:.0f} "
            f"requests/s  p99 {row['p99_ms']:.1f} ms"
        )
    print(f"lean script's CPU per request / ours, median of the rounds: {ratio:.2f}x (needs {min_ratio}x)")
    failures = []
    if ratio < min_ratio:
        failures.append(f"CPU per request only {ratio:.2f}x below the lean script's (needs {min_ratio}x)")
    if change > max_regression:
        failures.append(f"int8 graph {change:+.1%} over its committed cost (at most +{max_regression:.0%})")
    if medians["ours"]["errors"]:
        failures.append(f"{medians['ours']['errors']:.0f} errors in our rounds")
    for failure in failures:
        print(f"bench.guard: FAIL: {failure}")
    if not failures:
        print("bench.guard: pass")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
