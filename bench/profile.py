"""Where the CPU goes per request: the service as shipped under load, every process sampled with py-spy.

    python -m bench.profile [--connections 32] [--seconds 10] [--rate 250] [--keep DIR] [--env NAME=VALUE]
                            [--batch N | --request R]

Starts ``python -m app`` with its shipped defaults (the JSON access log written to a file), drives
``/denoise`` with single PNGs from wrk (with ``--batch N``, multipart bodies of N PNGs; with
``--request``, another of :data:`bench.requests.REQUESTS`, gRPC from h2load), and
meanwhile samples every process of the service with py-spy (the ``bench`` extra; it needs ptrace:
root, or CAP_SYS_PTRACE in a container). Prints the CPU time per request, measured from /proc, and
how it splits between the layers a request passes.

Each layer's share is its share of py-spy's samples, scaled to the measured CPU. A sample is put in
the innermost layer its stack passes through (a PNG decode called from a route counts as decoding).
Samples of a thread that is waiting (an inference thread with nothing to run, the event loop in
uvloop's C code, which also does the socket reads and writes) are left out, so that work is spread
over the other layers; and py-spy cannot tell a preempted thread from a running one. The split is
therefore approximate; the CPU per request is not.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import multipart
from bench.requests import REQUESTS, Workload, sender, workload
from bench.services import wait_for_workers
from tests.server import running_server

#: (layer, frame substrings), innermost first: a sample goes to the first layer met walking up from its leaf.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model (ONNX Runtime)", ("onnxruntime/",)),
    (
        "PNG decode (libpng, Pillow)",
        (
            "decode (app/imaging.py",
            "_decode_gray (app/imaging.py",
            "_open (app/imaging.py",
            "_to_gray (app/imaging.py",
        ),
    ),
    ("PNG encode (libpng)", ("encode_png (app/imaging.py",)),
    ("multipart parsing", ("multipart.py",)),  # app/multipart.py and the multipart library's module
    (
        "telemetry (FastAPI's hooks, OpenTelemetry, OTLP export)",
        ("opentelemetry/", "fastapi/telemetry/", "app/tracing.py", "google/protobuf/", "grpc/"),
    ),
    ("metrics (prometheus_client)", ("prometheus_client/", "app/metrics.py")),
    ("access log (logging, JSON)", ("logging/", "pythonjsonlogger/", "app/logs.py")),
    ("batcher and inference threads", ("app/runtime/", "concurrent/futures/")),
    ("routes and responses", ("app/routes/", "app/v2/", "app/dependencies.py", "app/pipeline.py", "app/imaging.py")),
    (
        "request context (ids, keys, limits)",
        ("app/middleware.py", "app/context.py", "app/routing.py", "app/protocol.py", "app/auth.py"),
    ),
    ("FastAPI and Starlette", ("fastapi/", "starlette/")),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("asyncio", ("asyncio/",)),
)
OTHER = "other"
#: Leaf frames of a thread that waits: excluded from the split.
WAITING = (
    "_worker (concurrent/futures/thread.py",
    "Runner.run (asyncio/runners.py",
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "Connection._recv (multiprocessing/connection.py",
    "select (selectors.py",
    "_wait_for_tstate_lock (threading.py",
)


def layer_of(frames: list[str]) -> str | None:
    """The layer a sample's stack (outermost first) belongs to, or None for a waiting thread."""
    if frames and frames[-1].startswith(WAITING):
        return None
    for frame in reversed(frames):
        for layer, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return layer
    return OTHER


def split(raw_files: list[Path]) -> collections.Counter[str]:
    """Samples per layer over py-spy's raw (collapsed-stack) files."""
    samples: collections.Counter[str] = collections.Counter()
    for path in raw_files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            layer = layer_of(stack.split(";"))
            if layer is not None and count.isdigit():
                samples[layer] += int(count)
    return samples


def session_pids(session: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU of ``pids`` so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, help="connections (default: the request's, 32 for one image)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after 3 s of warm-up)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--keep", type=Path, help="folder for py-spy's collapsed stacks (flamegraph.pl input)")
    parser.add_argument(
        "--env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="start the service with this environment variable set (repeatable), e.g. OTEL_TRACES_EXPORTER=otlp",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--batch", type=int, default=1, help="images per /denoise request (several: multipart)")
    choice.add_argument("--request", choices=REQUESTS, default="denoise", help="the request sent (bench.cpu's)")
    args = parser.parse_args()
    if malformed := [setting for setting in args.env if "=" not in setting]:
        parser.error(f"--env takes NAME=VALUE, not {', '.join(malformed)}")
    env = dict(setting.partition("=")[::2] for setting in args.env)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    generator = "h2load" if args.request == "grpc" else "wrk"
    if shutil.which(generator) is None or not Path(py_spy).exists():
        print(f"needs {generator} (apt-get install wrk nghttp2-client) and py-spy (the bench extra)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="profile-"))
    out = args.keep or work
    out.mkdir(parents=True, exist_ok=True)
    log = work / "service.log"
    load = workload(args.request, work)
    if args.batch > 1:
        body = work / f"batch{args.batch}.body"
        load = Workload("/denoise", body, multipart(args.batch, body), images=args.batch)
    with log.open("wb") as stderr, running_server({**load.env, **env}, stderr=stderr) as (url, process):
        wait_for_workers(log)
        pids = session_pids(process.pid)
        run = sender(url, load, args.connections)
        run(seconds=3)
        before = cpu_seconds(pids)
        spies = [
            subprocess.Popen(
                [
                    *(py_spy, "record", "--pid", str(pid), "--duration", str(round(args.seconds))),
                    *(
                        "--rate",
                        str(args.rate),
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(out / f"{pid}.txt"),
                    ),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in pids
        ]
        time.sleep(0.5)  # py-spy attached
        result = run(seconds=args.seconds)
        used = cpu_seconds(pids) - before
        for spy in spies:
            spy.wait()
    requests = result["requests"]
    per_request_ms = used / requests * 1000
    print(
        f"{load.path}, {load.images} image(s) per request, {args.connections or load.connections} connections,"
        f" {args.seconds:g} s:"
        f" {requests / (result['duration_us'] / 1e6):.0f}"
        f" requests/s, p99 {result['p99_us'] / 1000:.1f} ms, errors {result['non_2xx'] + result['timeout']}"
    )
    print(f"service CPU per request (all {len(pids)} processes, /proc): {per_request_ms:.3f} ms\n")
    samples = split([out / f"{pid}.txt" for pid in pids if (out / f"{pid}.txt").exists()])
    total = sum(samples.values())
    if total == 0:
        print("py-spy recorded nothing (ptrace not allowed?)", file=sys.stderr)
        return 1
    print("| layer | share of samples | µs per request |\n|---|---|---|")
    for layer, count in samples.most_common():
        print(f"| {layer} | {100 * count / total:.1f}% | {per_request_ms * 1000 * count / total:.0f} |")
    print(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
