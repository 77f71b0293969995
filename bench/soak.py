"""Soak test: many requests against one server; resident memory must stay flat after warm-up.

    python -m bench.soak [--requests 100000] [--concurrency 8] [--max-growth 0.10]

A mix of good and bad requests (denoise, batches, encode, reconstruct, undecodable bodies,
wrong sizes) goes to a server on a loopback port. Resident memory (VmRSS) is read after the
first 10% of the requests (warm-up) and at the end; the script fails if it grew by more than
``--max-growth``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.images import digit, png  # noqa: E402
from tests.server import running_server  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def requests_mix(latent: bytes) -> list[tuple[str, dict[str, Any], int]]:
    image = png(digit(0))
    batch = [("file", (f"{i}.png", png(digit(i)), "image/png")) for i in range(16)]
    raw = {"content": image, "headers": {"content-type": "image/png"}}
    return [
        ("/denoise", raw, 200),
        ("/denoise", {"files": batch}, 200),
        ("/encode", raw, 200),
        ("/reconstruct", {"content": latent, "headers": {"content-type": "application/json"}}, 200),
        ("/denoise", {"content": b"junk", "headers": {"content-type": "image/png"}}, 400),
        ("/denoise", {"content": png(digit(1)[:20]), "headers": {"content-type": "image/png"}}, 422),
    ]


async def drive(url: str, total: int, concurrency: int, pid: int, marks: dict[str, float]) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        latent = (await client.post("/encode", content=png(digit(0)), headers={"content-type": "image/png"})).content
        plan = cycle(requests_mix(latent))
        sent = unexpected = 0
        warm_at = max(total // 10, 1)
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal sent, unexpected
            while sent < total:
                sent += 1
                if sent == warm_at:
                    marks["warm"] = rss_mib(pid)
                path, kwargs, status = next(plan)
                response = await client.post(path, **kwargs)
                unexpected += response.status_code != status

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        marks["seconds"] = time.perf_counter() - started
        return unexpected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-growth", type=float, default=0.10, help="largest allowed RSS growth after warm-up")
    args = parser.parse_args()
    # One worker, so that the process measured is the one serving every request.
    with running_server({"DENOISE_LOG_LEVEL": "warning", "DENOISE_WORKERS": "1"}) as (url, process):
        marks = {"start": rss_mib(process.pid)}
        unexpected = asyncio.run(drive(url, args.requests, args.concurrency, process.pid, marks))
        marks["end"] = rss_mib(process.pid)
    growth = (marks["end"] - marks["warm"]) / marks["warm"]
    print(
        f"{args.requests} requests in {marks['seconds']:.0f} s ({args.requests / marks['seconds']:.0f}/s), "
        f"{unexpected} unexpected statuses"
    )
    print(
        f"resident memory: {marks['start']:.1f} MiB at start, {marks['warm']:.1f} MiB after warm-up, "
        f"{marks['end']:.1f} MiB at the end: {growth:+.1%} after warm-up (limit {args.max_growth:.0%})"
    )
    return 0 if growth <= args.max_growth and unexpected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
