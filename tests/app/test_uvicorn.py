"""The service as operators run it: ``python -m app`` (uvicorn) on a loopback port."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import decode_png, digit, png
from tests.server import TEST_SETTINGS, running_server


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with running_server({**TEST_SETTINGS, "DENOISE_LOG_LEVEL": "info"}) as running:
        yield running


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
    assert 'denoise_requests_total{endpoint="/denoise",model="mnist",protocol="rest",status="200"}' in text
    assert 'denoise_errors_total{endpoint="/denoise",protocol="rest",status="400"}' in text
    assert "denoise_request_duration_seconds_bucket" in text


def test_sigterm_exits_cleanly(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, process = server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_two_workers_share_one_metrics_view(tmp_path: Path) -> None:
    """With several workers, /metrics sums them all, whichever worker answers the scrape; the
    folder they share is removed when the service stops."""
    env = {**TEST_SETTINGS, "DENOISE_WORKERS": "2", "TMPDIR": str(tmp_path)}
    with running_server(env) as (url, _), httpx.Client(base_url=url) as client:
        for seed in range(20):
            response = client.post("/denoise", content=png(digit(seed)), headers={"content-type": "image/png"})
            assert response.status_code == 200
        for _ in range(4):  # scrapes land on either worker
            line = next(
                line
                for line in client.get("/metrics").text.splitlines()
                if line.startswith(
                    'denoise_requests_total{endpoint="/denoise",model="mnist",protocol="rest",status="200"}'
                )
            )
            assert float(line.split()[-1]) == 20
    assert not list(tmp_path.glob("denoise-metrics-*"))
