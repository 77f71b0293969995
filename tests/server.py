"""Running the real service (``python -m app``) on a loopback port for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
#: The committed bundles, by name.
BUNDLES = sorted(path.parent.name for path in MODELS.glob("*/manifest.json"))
MODEL = "mnist"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server not ready in time")


#: Small batch limits keep warm-up short in tests.
TEST_SETTINGS = {
    "DENOISE_WORKERS": "1",
    "DENOISE_BATCH_MAX_SIZE": "8",
    "DENOISE_MAX_BATCH_IMAGES": "32",
    "DENOISE_LOG_LEVEL": "warning",
    "DENOISE_GRPC_PORT": "0",  # tests that speak gRPC pick a free port
}


@contextmanager
def running_server(
    env: dict[str, str] | None = None,
    stderr: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    source: Path = REPO,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``python -m app`` from ``source`` (another checkout for A/B benchmarks) on a free loopback
    port with the committed models and ``env`` (default: :data:`TEST_SETTINGS`), its standard error and
    output to ``stderr`` and ``stdout`` (default: inherited); yield its URL and process; stop it after
    (SIGTERM, then SIGKILL)."""
    port = free_port()
    settings = {
        "DENOISE_HOST": "127.0.0.1",
        "DENOISE_PORT": str(port),
        "DENOISE_MODEL_DIR": str(MODELS),
        "DENOISE_MODELS": MODEL,
        **(TEST_SETTINGS if env is None else env),
    }
    # A session of its own, so that the whole tree (uvicorn's workers too) is stopped at the end.
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=source,
        env={**os.environ, **settings},
        stderr=stderr,
        stdout=stdout,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, process
    finally:
        stop_tree(process)


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)
