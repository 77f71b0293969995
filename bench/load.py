"""The load generators and measurements the benchmarks share: wrk, h2load for gRPC, the in-process
ceiling of an ONNX graph, a liveness probe; each result as a :class:`Row`."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
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


def _version(tool: str, flag: str) -> str | None:
    """The first line ``tool flag`` prints, or None where the tool is not installed."""
    if shutil.which(tool) is None:
        return None
    output = subprocess.run([tool, flag], capture_output=True, text=True, check=False).stdout
    return output.split("\n")[0].strip()


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
        "wrk": _version("wrk", "-v"),
        "h2load": _version("h2load", "--version"),
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


#: The Open Inference Protocol's inference method, as an HTTP/2 path.
GRPC_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


def grpc_png_body(path: Path, model: str = "mnist") -> Path:
    """Write a unary gRPC request message (the 5-byte prefix, uncompressed, then a ``ModelInferRequest``
    of one PNG, the sample, to ``model``) for h2load to send; return ``path``."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="png", datatype="BYTES", shape=[1])
    png = SAMPLE.read_bytes()
    request.raw_input_contents.append(len(png).to_bytes(4, "little") + png)
    message = request.SerializeToString()
    path.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    return path


def h2load_grpc(url: str, body: Path, connections: int, seconds: float) -> dict[str, Any]:
    """Unary gRPC calls from h2load (nghttp2's HTTP/2 load generator, in C): ``body`` (a gRPC message,
    :func:`grpc_png_body`) posted to ``url`` (``http://host:port`` and the method's path) for ``seconds``
    on ``connections`` connections, one call in flight on each, as wrk keeps one request in flight per
    connection. Returns the figures :data:`WRK_SCRIPT` reports, latencies from h2load's per-request log.
    ``non_2xx`` counts HTTP statuses only: a call's gRPC status travels in its trailers, which h2load
    does not read (:func:`grpc_failures` counts them on the server)."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "requests.tsv"
        command = [
            *("h2load", "-c", str(connections), "-m", "1", "-D", str(max(1, round(seconds)))),
            *("--log-file", str(log), "-d", str(body)),
            *("-H", "content-type: application/grpc", "-H", "te: trailers", url),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        # One line per request: its start (µs since the epoch), its HTTP status, its latency (µs).
        lines = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    finished = re.search(r"finished in ([\d.]+)(ms|s),", output)
    timeouts = re.search(r" (\d+) timeout", output)
    if finished is None or timeouts is None or not lines:
        raise RuntimeError(f"h2load reported no requests:\n{output[-2000:]}")
    latencies = np.asarray([int(latency) for _, _, latency in lines], dtype=np.float64)
    p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99))
    return {
        "requests": len(lines),
        "duration_us": float(finished[1]) * (1e3 if finished[2] == "ms" else 1e6),
        # A request that failed below HTTP (a connection lost) is logged with a status of -1.
        "non_2xx": sum(1 for _, status, _ in lines if not status.startswith("2")),
        "connect": 0,
        "read": 0,
        "write": 0,
        "timeout": int(timeouts[1]),
        "p50_us": p50,
        "p95_us": p95,
        "p99_us": p99,
        "max_us": float(latencies.max()),
    }


def grpc_failures(url: str) -> int:
    """The inference calls over gRPC that our service at ``url`` answered with a status other than OK so
    far (``denoise_requests_total`` on its ``/metrics``), leaving out those the client cancelled (h2load
    cancels the calls in flight when its time is up)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=5).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "denoise_requests"
            for sample in family.samples
            if sample.name == "denoise_requests_total"
            and sample.labels.get("protocol") == "grpc"
            and sample.labels.get("endpoint") == "ModelInfer"
            and sample.labels.get("status") not in ("OK", "CANCELLED")
        )
    )


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
