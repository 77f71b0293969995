"""The load generators and measurements the benchmarks share: wrk, a gRPC client, the in-process
ceiling of an ONNX graph, a liveness probe; each result as a :class:`Row`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
SAMPLE = REPO / "tests" / "data" / "noisy-digit.png"


@dataclass
class Row:
    """One load run: ``scenario`` is its id (what checks look rows up by), ``name`` what tables print."""

    scenario: str
    name: str
    concurrency: int
    images_per_request: int
    requests_per_s: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    non_2xx: int


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    import onnxruntime

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0],
    }


def multipart(count: int, path: Path) -> str:
    """Write a multipart body of ``count`` copies of the sample; return its content type."""
    files = [("file", (f"{i}.png", SAMPLE.read_bytes(), "image/png")) for i in range(count)]
    request = httpx.Request("POST", "http://x/", files=files)
    path.write_bytes(request.read())
    return request.headers["content-type"]


def wrk(
    url: str,
    body: Path,
    content_type: str,
    concurrency: int,
    seconds: float,
    accept: str | None = None,
    header: tuple[str, str] | None = None,
) -> dict[str, Any]:
    env = {**os.environ, "WRK_BODY": str(body), "WRK_CONTENT_TYPE": content_type}
    if accept:
        env["WRK_ACCEPT"] = accept
    if header:
        env["WRK_HEADER_NAME"], env["WRK_HEADER_VALUE"] = header
    threads = 1 if concurrency < 8 else 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK "))
    return dict(json.loads(line[4:]))


def row(scenario: str, name: str, result: dict[str, Any], concurrency: int, images: int) -> Row:
    rps = result["requests"] / (result["duration_us"] / 1e6)
    errors = result["connect"] + result["read"] + result["write"] + result["timeout"] + result["non_2xx"]
    return Row(
        scenario,
        name,
        concurrency,
        images,
        rps,
        rps * images,
        result["p50_us"] / 1000,
        result["p95_us"] / 1000,
        result["p99_us"] / 1000,
        errors,
        result["non_2xx"],
    )


def in_process(path: Path | bytes, batch: int, seconds: float, threads: int) -> float:
    """Images per second of one ONNX graph called directly, no HTTP."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        path if isinstance(path, bytes) else str(path), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32)
    for _ in range(5):
        session.run(None, {name: x})
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {name: x})
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def v2_body(path: Path, model_input: str, datatype: str, shape: list[int], data: bytes) -> tuple[str, str]:
    """Write a V2 binary-tensor request; return the header that says where its JSON ends."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": model_input,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    path.write_bytes(header + data)
    return "Inference-Header-Content-Length", str(len(header))


def grpc_load(scenario: str, name: str, address: str, concurrency: int, seconds: float) -> Row:
    """A bounded asyncio gRPC client: ``concurrency`` calls in flight for ``seconds``, one PNG each."""
    import asyncio

    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="png", datatype="BYTES", shape=[1])
    png = SAMPLE.read_bytes()
    request.raw_input_contents.append(len(png).to_bytes(4, "little") + png)
    latencies: list[float] = []
    errors = 0

    async def run() -> float:
        nonlocal errors
        async with grpc.aio.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            await stub.ServerReady(service_pb2.ServerReadyRequest())
            started = time.perf_counter()
            deadline = started + seconds

            async def caller() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    begin = time.perf_counter()
                    try:
                        await stub.ModelInfer(request, timeout=10)
                    except grpc.RpcError:
                        errors += 1
                    latencies.append(time.perf_counter() - begin)

            await asyncio.gather(*(caller() for _ in range(concurrency)))
            return time.perf_counter() - started

    elapsed = asyncio.run(run())
    ms = np.asarray(latencies) * 1000
    rps = len(latencies) / elapsed
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    return Row(scenario, name, concurrency, 1, rps, rps, p50, p95, p99, errors, 0)


def png_pixels(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"))


class LivenessProbe(threading.Thread):
    """Polls /health/live every 50 ms and records each answer's latency (a failure counts as inf)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self._done.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(f"{self.url}/health/live").status_code == 200
                except httpx.TransportError:
                    ok = False
                self.latencies.append((time.perf_counter() - started) * 1000 if ok else float("inf"))
                self._done.wait(0.05)

    def stop(self) -> list[float]:
        self._done.set()
        self.join()
        return self.latencies
