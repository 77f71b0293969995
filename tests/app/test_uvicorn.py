"""The service as operators run it: ``python -m app`` (uvicorn) on a loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL, MODELS, REPO, decode_png, digit, png


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


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "DENOISE_PORT": str(port),
        "DENOISE_MODEL_DIR": str(MODELS),
        "DENOISE_MODELS": MODEL,
        "DENOISE_BATCH_MAX_SIZE": "8",
        "DENOISE_MAX_BATCH_IMAGES": "32",
    }
    process = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_denoise_over_real_http(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    response = httpx.post(f"{url}/denoise", content=png(digit(1)), headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert len(response.headers["x-request-id"]) == 32
    decode_png(response.content)


def test_client_request_id_is_echoed(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    response = httpx.get(f"{url}/health/live", headers={"x-request-id": "caller-123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "caller-123"


def test_error_over_real_http(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    response = httpx.post(f"{url}/denoise", content=b"junk", headers={"content-type": "image/png"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "undecodable_image"


def test_metrics_count_requests(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    text = httpx.get(f"{url}/metrics").text
    assert 'denoise_requests_total{endpoint="/denoise",model="mnist",status="200"}' in text
    assert 'denoise_errors_total{endpoint="/denoise",status="400"}' in text
    assert "denoise_request_duration_seconds_bucket" in text


def readme_curl(marker: str) -> str:
    """The README's first curl command containing ``marker``, continuation lines joined."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    return next(line.strip() for line in text.splitlines() if line.startswith("curl ") and marker in line)


def run_readme_example(markers: list[str], url: str, cwd: Path) -> None:
    (cwd / "tests").symlink_to(REPO / "tests")
    for marker in markers:
        command = readme_curl(marker).replace("http://127.0.0.1:8000", url)
        result = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, check=False)
        assert result.returncode == 0, result.stderr


def test_readme_denoise_example_works_as_written(server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    run_readme_example(["/denoise -o denoised.png"], server[0], tmp_path)
    decode_png((tmp_path / "denoised.png").read_bytes())


def test_readme_encode_reconstruct_example_works(server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    run_readme_example(["/encode -o latent.json", "/reconstruct -o reconstructed.png"], server[0], tmp_path)
    decode_png((tmp_path / "reconstructed.png").read_bytes())


def test_sigterm_exits_cleanly(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, process = server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
