"""The service as operators run it: ``python -m app`` (uvicorn) on a loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import decode_png, digit, png
from tests.load import Load, access_lines
from tests.server import TEST_SETTINGS, free_port, poll, running_server


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
    assert httpx.post(f"{url}/denoise", content=png(digit(3)), headers={"content-type": "image/png"}).is_success
    assert httpx.post(f"{url}/denoise", content=b"junk", headers={"content-type": "image/png"}).status_code == 400
    text = httpx.get(f"{url}/metrics").text
    assert 'denoise_requests_total{endpoint="/denoise",model="mnist",protocol="rest",status="200"}' in text
    assert 'denoise_errors_total{endpoint="/denoise",protocol="rest",status="400"}' in text
    assert "denoise_request_duration_seconds_bucket" in text


def test_sigterm_exits_cleanly() -> None:
    with running_server() as (_, process):
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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_load_answers_every_request_it_took(workers: str, tmp_path: Path) -> None:
    """Requests in flight and those arriving on an idle keep-alive connection as the stop begins are
    answered; none is cut short or reset once the service has taken it."""
    log = tmp_path / "service.log"
    env = {**TEST_SETTINGS, "DENOISE_WORKERS": workers, "DENOISE_LOG_LEVEL": "info"}
    with log.open("wb") as stderr, running_server(env, stderr=stderr) as (url, process), Load(url, threads=6) as load:
        load.wait_served(100)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert set(load.outcomes) <= {"200", "refused", "unanswered"}, load.outcomes
    taken = access_lines(log.read_text(), "/denoise")
    assert [line["status"] for line in taken] == [200] * load.outcomes["200"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_stop_refuses_new_connections_at_once_and_answers_an_idle_one(workers: str) -> None:
    """After SIGTERM a new connection is refused at once (not queued where no worker takes it, to be
    reset later); an idle keep-alive connection stays open for a moment, and a request the client
    sends on it then is answered, with ``Connection: close``, instead of meeting a closed socket."""
    env = {**TEST_SETTINGS, "DENOISE_WORKERS": workers}
    with running_server(env) as (url, process), httpx.Client(base_url=url) as client:
        assert client.get("/health/ready").status_code == 200  # the connection is now idle and kept
        process.send_signal(signal.SIGTERM)
        poll(lambda: _refused(url), 10, "new connections refused")
        assert process.poll() is None  # still draining the idle connection
        response = client.post("/denoise", content=png(digit(1)), headers={"content-type": "image/png"})
        assert response.status_code == 200
        assert response.headers["connection"] == "close"
        assert process.wait(timeout=30) == 0


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/health/live", timeout=0.5)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:  # taken into a queue but not answered
        return False
    return False


@pytest.mark.parametrize("port", ["DENOISE_PORT", "DENOISE_GRPC_PORT"])
def test_a_port_another_server_holds_stops_the_start_with_one_line(port: str) -> None:
    """A second service on the first one's HTTP or gRPC port exits at once with status 3 and one line;
    gRPC's port sharing between a service's own workers does not let another service in."""
    grpc_port = free_port()
    with running_server({**TEST_SETTINGS, "DENOISE_GRPC_PORT": str(grpc_port)}) as (url, _):
        taken = {"DENOISE_PORT": url.rsplit(":", 1)[1], "DENOISE_GRPC_PORT": str(grpc_port)}[port]
        env = {
            **os.environ,
            **TEST_SETTINGS,
            "DENOISE_MODELS": "mnist",
            "DENOISE_PORT": str(free_port()),
            "DENOISE_GRPC_PORT": str(free_port()),
            port: taken,
        }
        second = subprocess.run(
            [sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert second.returncode == 3
        assert "Traceback" not in second.stderr
        errors = [line for line in second.stderr.splitlines() if '"level":"ERROR"' in line]
        assert len(errors) == 1, second.stderr
        assert (port if port == "DENOISE_GRPC_PORT" else "address already in use") in errors[0]
        assert httpx.get(f"{url}/health/live").status_code == 200  # the first one serves on
