"""The `scale` profile for real: the project's nginx.conf in front of service replicas.

Load spreads over every replica; one killed and one stopped mid-run lose no request; what nginx
retries and what it does not; nginx's own errors in the service's error shapes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.derive import scale_profile, write_balancer
from tests.deploy.engine import Engine, compose_project, unique
from tests.load import SAMPLE, Load
from tests.server import MODELS, free_port, poll, running_server

pytestmark = pytest.mark.container

PNG = {"content-type": "image/png"}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _denoised(url: str) -> float:
    """``/denoise`` requests a replica has answered, from its /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "denoise_requests"
        for sample in family.samples
        if sample.name == "denoise_requests_total" and sample.labels["endpoint"] == "/denoise"
    )


def test_load_spreads_and_survives_a_killed_and_a_stopped_replica(engine: Engine, image: float, tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    balancer_port = free_port()
    definition = scale_profile(tmp_path / "nginx", balancer_port, ports)
    env = {"NGINX_IMAGE": engine.nginx_image, "HOST_MODEL_DIR": str(MODELS)}
    with compose_project(engine, tmp_path, definition, env, profiles=("scale",)) as project:
        project("up", "--detach", timeout=300)  # the balancer waits for healthy replicas
        lb = f"http://127.0.0.1:{balancer_port}"
        poll(lambda: _answers(f"{lb}/health/ready"), 60, "ready through the balancer")
        replicas = [f"http://127.0.0.1:{port}" for port in ports]
        killed, stopped = project.container("replica-1"), project.container("replica-2")
        with Load(lb, threads=6) as load:
            load.wait_served(300)
            spread = [_denoised(url) for url in replicas]
            print(f"\n/denoise per replica after {load.served()} requests: {spread}")
            assert all(count >= 0.1 * sum(spread) for count in spread)  # least_conn uses all three
            before_kill = load.snapshot()
            engine.run("kill", killed)
            load.wait_served(load.served() + 300)
            after_kill = load.snapshot()
            engine.run("stop", stopped, timeout=90)
            assert engine.inspect(stopped, "{{.State.ExitCode}}") == "0"
            at_stop = load.served()
            load.wait_served(at_stop + 300)
        survivor_count = _denoised(replicas[2])
        balancer_log = engine.logs(project.container("balancer"))
    print(f"outcomes through the balancer: {dict(load.outcomes)}")
    for what in ("Connection refused", "Connection reset by peer", "prematurely closed", "temporarily disabled"):
        print(f"nginx log lines with {what!r}: {balancer_log.count(what)}")
    assert set(before_kill) == {"200"}, before_kill
    # A killed replica's requests are retried on another, except an answer it had begun to send: nginx cannot
    # take that back, so the client sees it cut (at most one per request in flight, one per load thread).
    during_kill = after_kill - before_kill
    assert set(during_kill) <= {"200", "cut"}, during_kill
    assert during_kill["cut"] <= load.threads, during_kill
    assert set(load.outcomes - after_kill) == {"200"}, load.outcomes - after_kill  # a stop loses nothing
    assert survivor_count > spread[2]


class BrokenReplica:
    """A replica that fails on purpose, on a loopback port: ``reset`` reads a request and resets the
    connection (a replica killed mid-request); ``hang`` reads it and never answers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self._listener.accept()
                connection.recv(65536)
                self.requests += 1
                if self.mode == "reset":
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    connection.close()
                else:
                    self._held.append(connection)

    def close(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()


@contextlib.contextmanager
def balancer(engine: Engine, folder: Path, servers: list[str], read_timeout_s: int | None = None) -> Iterator[str]:
    """The project's nginx.conf in a container of ``$NGINX_IMAGE``, over ``servers``; its URL."""
    port = free_port()
    volumes = write_balancer(folder, port, servers, read_timeout_s)
    name = unique("denoise-test-nginx")
    mounts = [option for volume in volumes for option in ("--volume", volume)]
    engine.run("run", "--detach", "--name", name, "--network", "host", *mounts, engine.nginx_image)
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: _reachable(url), 30, "nginx listening")
        yield url
    finally:
        engine.run("rm", "--force", name, check=False)


def _reachable(url: str) -> bool:
    try:
        httpx.get(f"{url}/", timeout=5)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    """A real replica (the service on this machine, not in a container: only nginx is under test)."""
    with running_server() as (url, _):
        yield url


def test_inference_is_retried_on_another_replica_and_model_management_is_not(
    engine: Engine, service: str, tmp_path: Path
) -> None:
    broken = BrokenReplica("reset")
    # The broken replica first every time (no failure accounting), the real one as the backup.
    servers = [f"127.0.0.1:{broken.port} max_fails=0", f"{service.removeprefix('http://')} backup"]
    try:
        with balancer(engine, tmp_path, servers) as lb:
            broken.requests = 0  # the probe that waited for nginx went there too
            denoised = httpx.post(f"{lb}/denoise", content=SAMPLE, headers=PNG)
            assert denoised.status_code == 200  # a POST the broken replica had read: run again elsewhere
            assert broken.requests == 1
            v2 = httpx.post(f"{lb}/v2/models/mnist/infer", json={"inputs": []})
            assert v2.status_code == 400  # the real replica's own answer to an empty request
            assert broken.requests == 2
            index = httpx.post(f"{lb}/v2/repository/index", json={})
            assert index.status_code == 502  # model management: never sent twice
            assert broken.requests == 3
            assert set(index.json()) == {"error"}
            assert httpx.get(f"{lb}/health/ready").status_code == 200
    finally:
        broken.close()


def test_nginx_errors_come_in_the_service_error_shapes(engine: Engine, tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    with balancer(engine, tmp_path, [nobody]) as lb:
        too_large = bytes(5 * 1024 * 1024)
        response = httpx.post(f"{lb}/denoise", content=too_large, headers={**PNG, "x-request-id": "caller-1"})
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-request-id"] == "caller-1"
        assert response.json() == {
            "error": {
                "status": 413,
                "code": "payload_too_large",
                "message": "request body larger than 4 MiB, the limit of the load balancer",
                "request_id": "caller-1",
            }
        }
        response = httpx.post(f"{lb}/v2/models/mnist/infer", content=too_large)
        assert response.status_code == 413
        assert list(response.json()) == ["error"]
        assert "4 MiB" in response.json()["error"]

        response = httpx.post(f"{lb}/denoise", content=SAMPLE, headers={**PNG, "x-request-id": 'bad "id"'})
        assert response.status_code == 502
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert (error["status"], error["code"]) == (502, "bad_gateway")
        assert error["request_id"] == response.headers["x-request-id"] != 'bad "id"'  # one of nginx's own
        response = httpx.get(f"{lb}/v2/health/ready")
        assert response.status_code == 502
        assert "no replica" in response.json()["error"]


def test_a_replica_that_never_answers_gives_504_in_the_error_shape(engine: Engine, tmp_path: Path) -> None:
    hung = BrokenReplica("hang")
    try:
        with balancer(engine, tmp_path, [f"127.0.0.1:{hung.port}"], read_timeout_s=1) as lb:
            start = time.monotonic()
            response = httpx.post(f"{lb}/denoise", content=SAMPLE, headers=PNG, timeout=30)
            assert response.status_code == 504
            assert time.monotonic() - start < 15
            assert response.json()["error"]["code"] == "gateway_timeout"
            response = httpx.get(f"{lb}/v2/health/ready", timeout=30)
            assert response.status_code == 504
            assert list(response.json()) == ["error"]
    finally:
        hung.close()
