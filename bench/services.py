"""The services a benchmark measures, each started on loopback ports for a block and stopped after
it, its whole process group gone: ours as shipped, the peers users would pick instead
(``bench/peers/``), and the naive service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import httpx

from bench.load import REPO
from tests.server import free_port, running_server

MODEL_DIR = REPO / "models" / "mnist"
#: The committed float32 autoencoder: what every peer serves, and a user calling ONNX Runtime would load.
FLOAT32_GRAPH = MODEL_DIR / "autoencoder.onnx"
#: Its int8 copy: what the service runs on a CPU.
INT8_GRAPH = MODEL_DIR / "autoencoder.int8.onnx"
#: Marks our access-log lines (JSON, one per request): the bench counts them.
ACCESS_LOGGER = '"denoise.access"'


def reference_onnx() -> bytes:
    """The reference network as ONNX (its speed does not depend on the weights' values)."""
    from training.export import to_onnx
    from training.model import build_reference

    return bytes(to_onnx(build_reference(), "image", "denoised").SerializeToString())


@contextmanager
def peer_process(
    command: list[str], env: dict[str, str], log: Path, ready: str | Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a peer service (its output to ``log``, in a session of its own) until it exits the block;
    ready once ``ready`` (a URL) answers 200, or (a function) returns True."""
    output = log.open("wb")
    process = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **env}, start_new_session=True, stdout=output, stderr=output
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if ready() if callable(ready) else _answers(ready):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{' '.join(command[2:4])} did not get ready; its output is in {log}")
            time.sleep(0.5)
        yield process
    finally:
        stop_group(process)
        output.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def grpc_ready(address: str) -> bool:
    """Whether the gRPC server at ``address`` (host:port) answers ``ServerReady`` with ready."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                service_pb2.ServerReadyRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(answer.ready)


@contextmanager
def checkout(revision: str, work: Path) -> Iterator[Path]:
    """A git worktree of ``revision``, removed after."""
    tree = work / f"at-{revision}"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=REPO, check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group and wait until every process in it is gone (a peer's children, such as
    tritonserver or LitServe's workers, can outlive their parent by seconds and would load the next run);
    SIGKILL what is left after 20 s."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    deadline = time.monotonic() + 20
    with suppress(subprocess.TimeoutExpired):  # a parent waiting on a child that does not stop
        process.wait(timeout=20)
    while True:
        process.poll()  # reaped, so that the group ends with its last live member
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
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


def keras_model_for_naive(work: Path) -> tuple[Path, str]:
    for candidate in (MODEL_DIR / "autoencoder.keras", REPO / "runs" / "mnist" / "autoencoder.keras"):
        if candidate.is_file():
            return candidate, f"trained weights from {candidate.relative_to(REPO)}"
    from training.model import Architecture, build_autoencoder

    path = work / "naive.keras"
    build_autoencoder(Architecture()).autoencoder.save(path)
    return path, "same architecture, untrained weights (speed does not depend on them)"


def served_graph() -> Path:
    """The autoencoder our service runs as shipped on CPU: the bundle's int8 copy where it has one."""
    from denoise_bundle import load_manifest

    manifest = load_manifest(MODEL_DIR)
    return MODEL_DIR / (manifest.int8.graph.file if manifest.int8 else manifest.graphs["autoencoder"].file)
