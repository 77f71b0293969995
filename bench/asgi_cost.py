"""CPU per ``/denoise`` request through the app's ASGI callable, in one process, with no HTTP server or
client: ``python -m bench.asgi_cost [--requests 2000] [--concurrency 16] [--rounds 3] [--before REV]``.

The app is built as a worker builds it (``create_app``, the committed ``mnist`` bundle, the JSON access
log written to /dev/null) and driven by ``--concurrency`` coroutines sending single-image requests; the
CPU time of the process (every thread) is divided by the requests. A request that finds the worker
otherwise idle runs its batch of one at once, so this is the cost of a request at low load: the model
at batch 1 and everything around it, without the HTTP server's share. Each measurement runs in a fresh
process; ``--before REV`` measures the service at another commit (a git worktree) in alternating rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


async def _measure(requests: int, concurrency: int) -> float:
    """CPU µs per request of the app found on ``sys.path`` (the source being measured)."""
    import logging

    from app.config import Settings
    from app.logs import configure
    from app.main import create_app
    from tests.images import digit, png

    configure("info", "json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - open for the process's life
    app = create_app(Settings(grpc_port=0, models="mnist", model_poll_s=0))
    body = png(digit(3))
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())]

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/denoise",
            "raw_path": b"/denoise",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        statuses: list[int] = []

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays: wait for nothing
            raise AssertionError("unreachable")

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))

        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"/denoise answered {statuses}")

    async def client(count: int) -> None:
        for _ in range(count):
            await one()

    async with app.router.lifespan_context(app):
        await asyncio.gather(*(client(50) for _ in range(concurrency)))  # warm
        start = time.process_time()
        await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
        used = time.process_time() - start
    return used / (requests // concurrency * concurrency) * 1e6


def _run(source: Path, requests: int, concurrency: int) -> float:
    """One measurement of the service in ``source``, in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(requests), str(concurrency)]
    env = {**os.environ, "PYTHONPATH": str(source)}
    result = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"^cpu_us_per_request (\S+)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"the measurement of {source} failed:\n{result.stderr[-3000:]}")
    return float(found.group(1))


def main() -> int:
    if sys.argv[1:2] == ["--measure"]:
        sys.path.insert(0, os.getcwd())
        print(f"cpu_us_per_request {asyncio.run(_measure(int(sys.argv[2]), int(sys.argv[3]))):.1f}")
        return 0
    sys.path.insert(0, str(REPO))
    from bench.services import checkout

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="REV", help="also measure the service at this commit")
    args = parser.parse_args()
    with ExitStack() as stack:
        sources = {"ours": REPO}
        if args.before:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-asgi-cost-")))
            sources[f"ours at {args.before}"] = stack.enter_context(checkout(args.before, work))
        figures: dict[str, list[float]] = {name: [] for name in sources}
        for number in range(args.rounds):
            for name, source in sources.items():
                figures[name].append(_run(source, args.requests, args.concurrency))
                print(f"round {number + 1} {name:14} {figures[name][-1]:.0f} µs CPU per request", flush=True)
    for name, values in figures.items():
        rounds = ", ".join(f"{value:.0f}" for value in values)
        print(f"{name:14} {sum(values) / len(values):.0f} µs CPU per request (rounds {rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
