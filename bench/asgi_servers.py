"""The HTTP server's share of a request: the same apps under uvicorn and under granian, in one run.

    python -m bench.asgi_servers [--rounds 3] [--seconds 6]

Four services in alternating rounds, single-image ``/denoise`` from wrk at 32 connections, the server's
CPU per request from /proc (as :mod:`bench.cpu`): our service as shipped (uvicorn with its httptools
protocol extended by :mod:`app.protocol`) and the same app factory under granian (two workers, the same
JSON logging configuration, the metrics shared across workers as shipped); the lean script under uvicorn
and under granian, where the server is the only difference. Under granian our service runs without
what :mod:`app.protocol` adds to uvicorn (the header deadline and limits, the departed-client check), so
its figure is a bound on what switching would gain, not a like-for-like replacement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.logs import log_config
from bench.cpu import Service, alternate, lean, ours
from bench.profile import session_pids
from bench.services import FLOAT32_GRAPH, peer_process
from tests.server import MODEL, MODELS, free_port


@contextmanager
def granian(work: Path, target: str, env: dict[str, str], ready_path: str) -> Iterator[tuple[str, list[int]]]:
    """``target`` (``module:factory`` or ``module:app``) under granian with two workers and the service's
    JSON log configuration; its URL and every process's pid."""
    port = free_port()
    config = work / "log-config.json"
    config.write_text(json.dumps(log_config("info", "json")))
    state = Path(tempfile.mkdtemp(prefix="granian-state-", dir=work))
    command = [sys.executable, "-m", "granian", "--interface", "asgi", "--workers", "2", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-config", str(config), "--no-access-log", "--loop", "uvloop"]
    command += ["--factory", target] if target.endswith("create_app") else [target]
    url = f"http://127.0.0.1:{port}"
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(state / "metrics"), "DENOISE_WORKER_STATE_DIR": str(state / "workers")}
    for folder in shared.values():
        Path(folder).mkdir()
    with peer_process(command, {**shared, **env}, work / "granian.log", url + ready_path) as process:
        yield url, session_pids(process.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per service per round")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    if importlib.util.find_spec("granian") is None:
        print("granian not found: pip install granian (the dev extra has it)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-servers-"))
    ours_env = {
        "DENOISE_MODEL_DIR": str(MODELS),
        "DENOISE_MODELS": MODEL,
        "DENOISE_WORKERS": "2",
        "DENOISE_GRPC_PORT": "0",
    }
    services: dict[str, Service] = {
        "ours, uvicorn": lambda w: ours(w, {"DENOISE_GRPC_PORT": "0"}),
        "ours, granian": lambda w: granian(w, "app.main:create_app", ours_env, "/health/ready"),
        "lean, uvicorn": lean,
        "lean, granian": lambda w: granian(
            w, "bench.peers.lean_fastapi:app", {"LEAN_MODEL": str(FLOAT32_GRAPH)}, "/docs"
        ),
    }
    means = alternate(services, work, args.rounds, args.seconds)
    for app in ("ours", "lean"):
        change = means[f"{app}, granian"]["cpu_ms_per_request"] / means[f"{app}, uvicorn"]["cpu_ms_per_request"] - 1
        print(f"{app}: granian's CPU per request against uvicorn's: {change:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
