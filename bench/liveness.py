"""Liveness while large PNG batches are decoded: ``python -m bench.liveness``.

Three clients each send 64 PNG scans of 900x900 (resized to 28x28 by the service) over and over,
once to ``/v2/models/mnist/infer`` (JSON, base64 PNGs, ``resize`` parameter) and once to
``/denoise?resize=true`` (multipart), while a probe asks ``/health/live`` every 50 ms. A front door
that decodes on the event loop holds the probe's answer for as long as one batch takes to decode.
Prints the probe's latency percentiles for each front door; one worker, as the event loop is per
worker.

``--blank`` sends instead 256 one-bit blank PNGs of 2000x2000 per request (about 570 bytes each,
4 million pixels declared): cheap on the wire, seconds of decoding per request.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.load import LivenessProbe
from tests.server import REPO, running_server

CLIENTS = 3
IMAGES = 64
SIDE = 900


def scans(count: int, side: int, seed: int = 0) -> list[bytes]:
    """Scans of a bright blob with specks of dust, small enough as PNGs (tens of kB) that 64 fit in
    one request under the body limit, large enough in pixels that decoding and resizing dominate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    images = []
    for _ in range(count):
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02) * 200
        dust = rng.random(blob.shape) < 0.002
        pixels = np.where(dust, 255, blob).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def blanks(count: int, side: int = 2000) -> list[bytes]:
    """One-bit all-black PNGs: a few hundred bytes that declare ``side`` squared pixels."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    return [buffer.getvalue()] * count


def v2_sender(url: str, pngs: list[bytes]) -> Callable[[httpx.Client], int]:
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "png",
                    "datatype": "BYTES",
                    "shape": [len(pngs)],
                    "data": [base64.b64encode(p).decode() for p in pngs],
                }
            ],
            "parameters": {"resize": True},
        }
    )

    def send(client: httpx.Client) -> int:
        headers = {"content-type": "application/json"}
        return client.post(f"{url}/v2/models/mnist/infer", content=body, headers=headers).status_code

    return send


def denoise_sender(url: str, pngs: list[bytes]) -> Callable[[httpx.Client], int]:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(pngs)]

    def send(client: httpx.Client) -> int:
        return client.post(f"{url}/denoise?resize=true", files=files).status_code

    return send


def measure(url: str, send: Callable[[httpx.Client], int], seconds: float) -> dict[str, float]:
    stop = threading.Event()
    statuses: list[int] = []

    def client_loop() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                statuses.append(send(client))

    probe = LivenessProbe(url)
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the clients are sending before the probe starts
    probe.start()
    time.sleep(seconds)
    latencies = np.array(probe.stop())
    stop.set()
    for thread in threads:
        thread.join()
    bad = [status for status in statuses if status != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed: {sorted(set(bad))}")
    return {
        "requests": len(statuses),
        "probes": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="probe time per front door")
    parser.add_argument("--blank", action="store_true", help="256 one-bit blank 2000x2000 PNGs per request")
    parser.add_argument("--source", type=Path, default=REPO, help="the checkout whose service to run (an A/B)")
    args = parser.parse_args()
    pngs = blanks(256) if args.blank else scans(IMAGES, SIDE)
    side = 2000 if args.blank else SIDE
    print(f"{CLIENTS} clients x {len(pngs)} PNGs of {side}x{side} ({sum(map(len, pngs)) / 1e6:.2f} MB a request)")
    env = {"DENOISE_WORKERS": "1", "DENOISE_LOG_LEVEL": "warning", "DENOISE_GRPC_PORT": "0"}
    with running_server(env, source=args.source) as (url, _):
        for name, sender in (("/v2/models/mnist/infer", v2_sender), ("/denoise?resize=true", denoise_sender)):
            result = measure(url, sender(url, pngs), args.seconds)
            print(
                f"{name:24} requests {result['requests']:4.0f}  /health/live p50 {result['p50_ms']:6.1f} ms  "
                f"p99 {result['p99_ms']:6.1f} ms  max {result['max_ms']:6.1f} ms ({result['probes']:.0f} probes)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
