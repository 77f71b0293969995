"""Throughput and latency of the service, side by side with the in-process ceiling and a naive service.

    python -m bench.run [--duration 8] [--overload-duration 10] [--out bench/results]

Everything runs on this machine, the load generator (wrk) included, and only targets 127.0.0.1.
The machine is noisy: ratios from one run are what counts.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.server import free_port, running_server  # noqa: E402

MODEL_DIR = REPO / "models" / "mnist"
#: The committed float32 autoencoder: what every peer serves, and a user calling ONNX Runtime would load.
FLOAT32_GRAPH = MODEL_DIR / "autoencoder.onnx"
WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
SAMPLE = REPO / "tests" / "data" / "noisy-digit.png"
#: Marks our access-log lines (JSON, one per request): the bench counts them.
ACCESS_LOGGER = '"denoise.access"'
#: Seconds between the end of the overload and the recovery run.
RECOVERY_PAUSE_S = 2


@dataclass
class Row:
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


def row(name: str, result: dict[str, Any], concurrency: int, images: int) -> Row:
    rps = result["requests"] / (result["duration_us"] / 1e6)
    errors = result["connect"] + result["read"] + result["write"] + result["timeout"] + result["non_2xx"]
    return Row(
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


def grpc_load(address: str, concurrency: int, seconds: float) -> Row:
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
    return Row("grpc png", concurrency, 1, rps, rps, p50, p95, p99, errors, 0)


def png_pixels(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"))


def reference_onnx() -> bytes:
    """The seeds' reference network as ONNX (its speed does not depend on the weights' values)."""
    from training.export import to_onnx
    from training.model import build_reference

    return bytes(to_onnx(build_reference(), "image", "denoised").SerializeToString())


@contextmanager
def peer_process(
    command: list[str], env: dict[str, str], log: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a peer service (its output to ``log``, in a session of its own) until it exits the block;
    ready once ``ready_url`` answers 200."""
    output = log.open("wb")
    process = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **env}, start_new_session=True, stdout=output, stderr=output
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{' '.join(command[2:4])} did not get ready; its output is in {log}")
            time.sleep(0.5)
        yield process
    finally:
        stop_group(process)
        output.close()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group and wait until every process in it is gone (a peer's children, such as
    tritonserver or LitServe's workers, can outlive their parent by seconds and would load the next run)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    process.wait()
    deadline = time.monotonic() + 20
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(process.pid, 9)
        time.sleep(0.1)


def wait_for_quiet(max_wait_s: float = 15.0, busy_below: float = 0.1) -> None:
    """Before a measured run: wait (up to ``max_wait_s``) until the machine's CPUs are mostly idle over half a
    second, so that what the last service left running does not count against the next one."""

    def busy_and_total() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        busy0, total0 = busy_and_total()
        time.sleep(0.5)
        busy1, total1 = busy_and_total()
        if (busy1 - busy0) / max(total1 - total0, 1) < busy_below:
            return


@contextmanager
def uvicorn_app(app: str, env: dict[str, str], log: Path, workers: int = 1) -> Iterator[str]:
    """Serve ``module:app`` with uvicorn on a loopback port; yield its URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]
    command += ["--workers", str(workers)] if workers > 1 else []
    url = f"http://127.0.0.1:{port}"
    with peer_process(command, env, log, f"{url}/docs"):
        yield url


@contextmanager
def triton_service(log: Path) -> Iterator[str]:
    """The PyTriton peer (bench/peers/triton_service.py) on loopback ports; yields its HTTP URL once ready.

    It runs under ``$BENCH_TRITON_PYTHON`` (default: this interpreter): nvidia-pytriton pins numpy below 2,
    so it is best kept in a virtual environment of its own (with onnxruntime and Pillow)."""
    import sysconfig

    python = os.environ.get("BENCH_TRITON_PYTHON", sys.executable)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        "LEAN_MODEL": str(FLOAT32_GRAPH),
        "LD_LIBRARY_PATH": f"{sysconfig.get_config_var('LIBDIR')}:{os.environ.get('LD_LIBRARY_PATH', '')}",
    }
    command = [python, "-m", "bench.peers.triton_service", str(http_port), str(grpc_port), str(metrics_port)]
    url = f"http://127.0.0.1:{http_port}"
    with peer_process(command, env, log, f"{url}/v2/models/denoise/ready"):
        yield url


@contextmanager
def litserve_service(log: Path) -> Iterator[str]:
    """The LitServe peer (bench/peers/litserve_service.py) on a loopback port; yields its URL once ready."""
    port = free_port()
    command = [sys.executable, "-m", "bench.peers.litserve_service", str(port)]
    url = f"http://127.0.0.1:{port}"
    with peer_process(command, {"LEAN_MODEL": str(FLOAT32_GRAPH)}, log, f"{url}/health"):
        yield url


@contextmanager
def our_service(work: Path, name: str, env: dict[str, str], counts: dict[str, int]) -> Iterator[str]:
    """``python -m app`` as shipped plus ``env``, its log (access lines included) written to a file as a
    container's would be; ``counts[name]`` gets the number of access-log lines written."""
    log = work / f"{name}.log"
    with log.open("wb") as stderr, running_server(env, stderr=stderr) as (url, _):
        wait_for_workers(log)
        yield url
    counts[name] = sum(ACCESS_LOGGER in line for line in log.read_text(errors="replace").splitlines())


def wait_for_workers(log: Path) -> None:
    """/health/ready answers once one worker is ready; wrk opens all its connections at once, and a worker
    still loading accepts none of them, so wait until every worker (one per core) has logged that it is ready."""
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count('"message":"ready=True') < len(os.sched_getaffinity(0)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every worker got ready; see {log}")
        time.sleep(0.2)


def naive_service(keras_model: Path, log: Path) -> AbstractContextManager[str]:
    env = {"NAIVE_MODEL": str(keras_model), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return uvicorn_app("bench.naive_service:app", env, log)


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


def keras_model_for_naive(work: Path) -> tuple[Path, str]:
    for candidate in (MODEL_DIR / "autoencoder.keras", REPO / "runs" / "mnist" / "autoencoder.keras"):
        if candidate.is_file():
            return candidate, f"trained weights from {candidate.relative_to(REPO)}"
    from training.model import Architecture, build_autoencoder

    path = work / "naive.keras"
    build_autoencoder(Architecture()).autoencoder.save(path)
    return path, "same architecture, untrained weights (speed does not depend on them)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load run")
    parser.add_argument("--overload-duration", type=float, default=10.0, help="seconds at concurrency 512")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="folder for results.json and the plot"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = args.duration
    info = machine()
    threads = info["cores"]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    png_type = "image/png"
    batch_types = {n: multipart(n, work / f"batch{n}.body") for n in (64, 256)}
    naive_type = multipart(1, work / "single.multipart")
    rows: list[Row] = []
    results: dict[str, Any] = {"machine": info, "command": " ".join(["python", "-m", "bench.run", *sys.argv[1:]])}

    served = served_graph()
    results["served_autoencoder"] = served.name
    print(f"machine: {info}; our service runs {served.name}", flush=True)
    ceiling = {
        "autoencoder_b1": in_process(FLOAT32_GRAPH, 1, 3, threads),
        "served_b1": in_process(served, 1, 3, threads),
        "served_b64": in_process(served, 64, 3, threads),
    }
    # The model's cost against the seeds' network: the two measured in turn, three times, and averaged.
    reference = reference_onnx()
    pairs = [(in_process(FLOAT32_GRAPH, 64, 2, threads), in_process(reference, 64, 2, threads)) for _ in range(3)]
    ceiling["autoencoder_b64"] = float(np.mean([ours for ours, _ in pairs]))
    ceiling["reference_b64"] = float(np.mean([seeds for _, seeds in pairs]))
    results["in_process_images_per_s"] = ceiling
    print(f"in-process images/s: {json.dumps({k: round(v) for k, v in ceiling.items()})}", flush=True)

    grpc_port = free_port()
    access_lines: dict[str, int] = {}
    results["access_log_lines"] = access_lines
    with our_service(work, "main", {"DENOISE_GRPC_PORT": str(grpc_port)}, access_lines) as url:
        latent = work / "latent.json"
        latent.write_bytes(
            httpx.post(f"{url}/encode", content=SAMPLE.read_bytes(), headers={"content-type": png_type}).content
        )
        for concurrency in (1, 8, 32, 128):
            result = wrk(f"{url}/denoise", SAMPLE, png_type, concurrency, seconds)
            rows.append(row("denoise", result, concurrency, 1))
            print(rows[-1], flush=True)

        def batch_row(images: int) -> None:
            result = wrk(f"{url}/denoise", work / f"batch{images}.body", batch_types[images], 2, seconds)
            rows.append(row(f"denoise batch {images}", result, 2, images))
            print(rows[-1], flush=True)

        batch_row(64)
        # The batch-256 ceilings (the graph we serve, and the float32 graph) are measured right before and
        # right after the HTTP run and averaged, so that the machine's drift does not skew the ratios.
        before = {graph: in_process(graph, 256, 3, threads) for graph in (served, FLOAT32_GRAPH)}
        batch_row(256)
        after = {graph: in_process(graph, 256, 3, threads) for graph in (served, FLOAT32_GRAPH)}
        ceiling["served_b256"] = (before[served] + after[served]) / 2
        ceiling["autoencoder_b256"] = (before[FLOAT32_GRAPH] + after[FLOAT32_GRAPH]) / 2
        results["served_b256_before_after"] = [before[served], after[served]]
        for graph in (served, FLOAT32_GRAPH):
            print(f"{graph.name} in-process, batch 256: {before[graph]:.0f} images/s before, {after[graph]:.0f} after")
        # The Open Inference Protocol: one PNG as binary BYTES; 256 float32 images as a binary tensor.
        png = SAMPLE.read_bytes()
        v2_png = v2_body(work / "v2-png.body", "png", "BYTES", [1], len(png).to_bytes(4, "little") + png)
        result = wrk(
            f"{url}/v2/models/mnist/infer", work / "v2-png.body", "application/octet-stream", 32, seconds, header=v2_png
        )
        rows.append(row("v2 binary png", result, 32, 1))
        images = np.repeat(np.asarray(png_pixels(png), dtype=np.float32)[None, ..., None] / 255, 256, axis=0)
        v2_batch = v2_body(work / "v2-b256.body", "image", "FP32", list(images.shape), images.tobytes())
        before_v2 = in_process(served, 256, 3, threads)
        result = wrk(
            f"{url}/v2/models/mnist-autoencoder/infer",
            work / "v2-b256.body",
            "application/octet-stream",
            2,
            seconds,
            header=v2_batch,
        )
        ceiling["served_b256_around_v2"] = (before_v2 + in_process(served, 256, 3, threads)) / 2
        rows.append(row("v2 binary batch 256", result, 2, 256))
        rows.append(grpc_load(f"127.0.0.1:{grpc_port}", 32, seconds))
        print(*rows[-3:], sep="\n", flush=True)
        rows.append(row("encode", wrk(f"{url}/encode", SAMPLE, png_type, 32, seconds), 32, 1))
        rows.append(row("reconstruct", wrk(f"{url}/reconstruct", latent, "application/json", 32, seconds), 32, 1))
        print(rows[-2], rows[-1], sep="\n", flush=True)

        probe = LivenessProbe(url)
        probe.start()
        time.sleep(1)
        overload = row("denoise overload", wrk(f"{url}/denoise", SAMPLE, png_type, 512, args.overload_duration), 512, 1)
        latencies = probe.stop()
        time.sleep(RECOVERY_PAUSE_S)  # the flood's last connections drain
        recovery = row("denoise after overload", wrk(f"{url}/denoise", SAMPLE, png_type, 8, 3), 8, 1)
        rows += [overload, recovery]
        results["overload"] = {
            "shed_503": overload.non_2xx,
            "liveness_probes": len(latencies),
            "liveness_max_ms": max(latencies),
            "liveness_p99_ms": float(np.percentile(latencies, 99)),
            "recovery_errors": recovery.errors,
        }
        print(overload, recovery, results["overload"], sep="\n", flush=True)

    # The peers, interleaved with ours (ours, ours on the float32 graph, ours with anomaly scores off, lean,
    # LitServe, Triton; twice), the
    # same load generator and PNG. Each runs alone while it is measured: an idle LitServe polls its queues
    # (about 30% of a core), which would slow whichever service was being measured beside it. The peers
    # serve the committed float32 graph, as their users would; ours runs the bundle's int8 copy as shipped,
    # and once more with DENOISE_INT8=false, so the table shows what the graph and what the serving buys.
    lean_env = {"LEAN_MODEL": str(FLOAT32_GRAPH)}
    triton_header = v2_body(work / "triton-png.body", "png", "BYTES", [1, 1], len(png).to_bytes(4, "little") + png)
    litserve_body = work / "litserve.json"
    litserve_body.write_text(json.dumps({"png": base64.b64encode(png).decode("ascii")}))
    peers: tuple[tuple[str, Callable[[int], AbstractContextManager[str]], str, Path, str, tuple[str, str] | None], ...]
    peers = (
        (
            "denoise vs peers",
            lambda n: our_service(work, f"vs-peers-{n}", {"DENOISE_GRPC_PORT": "0"}, access_lines),
            "/denoise",
            SAMPLE,
            png_type,
            None,
        ),
        (
            "denoise float32 vs peers",
            lambda n: our_service(
                work, f"vs-peers-float32-{n}", {"DENOISE_GRPC_PORT": "0", "DENOISE_INT8": "false"}, access_lines
            ),
            "/denoise",
            SAMPLE,
            png_type,
            None,
        ),
        (  # what the anomaly score costs: ours with scoring off
            "denoise, scores off",
            lambda n: our_service(
                work, f"scores-off-{n}", {"DENOISE_GRPC_PORT": "0", "DENOISE_ANOMALY_SCORES": "false"}, access_lines
            ),
            "/denoise",
            SAMPLE,
            png_type,
            None,
        ),
        (
            "lean fastapi script",
            lambda n: uvicorn_app("bench.peers.lean_fastapi:app", lean_env, work / f"lean-{n}.log", workers=2),
            "/denoise",
            SAMPLE,
            png_type,
            None,
        ),
        (
            "litserve",
            lambda n: litserve_service(work / f"litserve-{n}.log"),
            "/predict",
            litserve_body,
            "application/json",
            None,
        ),
        (
            "triton (pytriton)",
            lambda n: triton_service(work / f"triton-{n}.log"),
            "/v2/models/denoise/infer",
            work / "triton-png.body",
            "application/octet-stream",
            triton_header,
        ),
    )
    for round_number in range(2):
        for name, start, path, body, content_type, header in peers:
            with start(round_number) as base:
                wait_for_quiet()
                for concurrency in (32, 1):
                    result = wrk(f"{base}{path}", body, content_type, concurrency, seconds, header=header)
                    rows.append(row(name, result, concurrency, 1))
                    print(rows[-1], flush=True)

    keras_path, naive_note = keras_model_for_naive(work)
    results["naive_model"] = naive_note
    with naive_service(keras_path, work / "naive.log") as naive_url:
        for concurrency in (1, 32):
            result = wrk(f"{naive_url}/denoise", work / "single.multipart", naive_type, concurrency, seconds)
            rows.append(row("naive keras service", result, concurrency, 1))
            print(rows[-1], flush=True)

    print(f"access-log lines written by our service: {access_lines}", flush=True)
    results["rows"] = [asdict(r) for r in rows]
    results["checks"] = checks(rows, ceiling, results["overload"])
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(rows, ceiling, results["checks"])
    plot(rows, args.out / "throughput_latency.png")
    print(f"\nresults: {args.out / 'results.json'}, plot: {args.out / 'throughput_latency.png'}")
    return 0


PEER_ROWS = ("denoise vs peers", "denoise float32 vs peers", "lean fastapi script", "litserve", "triton (pytriton)")


def served_graph() -> Path:
    """The autoencoder our service runs as shipped on CPU: the bundle's int8 copy where it has one."""
    from denoise_bundle import load_manifest

    manifest = load_manifest(MODEL_DIR)
    return MODEL_DIR / (manifest.int8.graph.file if manifest.int8 else manifest.graphs["autoencoder"].file)


def _mean(rows: list[Row], name: str, concurrency: int, field: str) -> float:
    return float(np.mean([getattr(r, field) for r in rows if r.name == name and r.concurrency == concurrency]))


def _mean_rps(rows: list[Row], name: str, concurrency: int) -> float:
    return _mean(rows, name, concurrency, "requests_per_s")


def _find(rows: list[Row], name: str, concurrency: int) -> Row:
    return next(r for r in rows if r.name == name and r.concurrency == concurrency)


def checks(rows: list[Row], ceiling: dict[str, float], overload: dict[str, Any]) -> dict[str, Any]:
    c32, c1 = _find(rows, "denoise", 32), _find(rows, "denoise", 1)
    naive32 = _find(rows, "naive keras service", 32)
    batch256 = _find(rows, "denoise batch 256", 2)
    return {
        "c32_vs_naive_rps_ratio": c32.requests_per_s / naive32.requests_per_s,
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
        "anomaly_score_cost_c1": 1 - _mean_rps(rows, "denoise vs peers", 1) / _mean_rps(rows, "denoise, scores off", 1),
        "anomaly_score_cost_c32": 1
        - _mean_rps(rows, "denoise vs peers", 32) / _mean_rps(rows, "denoise, scores off", 32),
        "v2_batch256_fraction_of_ceiling": _find(rows, "v2 binary batch 256", 2).images_per_s
        / ceiling["served_b256_around_v2"],
        "v2_and_grpc_errors": _find(rows, "v2 binary png", 32).errors + _find(rows, "grpc png", 32).errors,
        "c32_vs_lean_rps_ratio": _mean_rps(rows, "denoise vs peers", 32) / _mean_rps(rows, "lean fastapi script", 32),
        "c32_float32_vs_lean_rps_ratio": _mean_rps(rows, "denoise float32 vs peers", 32)
        / _mean_rps(rows, "lean fastapi script", 32),
        "c32_vs_litserve_rps_ratio": _mean_rps(rows, "denoise vs peers", 32) / _mean_rps(rows, "litserve", 32),
        "c32_vs_triton_rps_ratio": _mean_rps(rows, "denoise vs peers", 32) / _mean_rps(rows, "triton (pytriton)", 32),
        "c32_p99_ms_ours_and_peers": {name: _mean(rows, name, 32, "p99_ms") for name in PEER_ROWS},
        "c1_p50_ms_ours_and_peers": {name: _mean(rows, name, 1, "p50_ms") for name in PEER_ROWS},
        "overload_shed_503": overload["shed_503"],
        "liveness_max_ms_under_overload": overload["liveness_max_ms"],
        "recovered_without_errors": overload["recovery_errors"] == 0,
    }


def print_table(rows: list[Row], ceiling: dict[str, float], check: dict[str, Any]) -> None:
    naive1 = _find(rows, "naive keras service", 1).requests_per_s
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
    for name, style in (("denoise", "o-"), ("naive keras service", "s--")):
        points = sorted((r for r in rows if r.name == name), key=lambda r: r.concurrency)
        xs = [r.concurrency for r in points]
        left.plot(xs, [r.requests_per_s for r in points], style, label=name)
        right.plot(xs, [r.p99_ms for r in points], style, label=name)
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
