"""Slow and abusive clients, overload, graceful shutdown and bad settings, against a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import REPO, digit, png
from tests.server import TEST_SETTINGS, running_server

Server = tuple[str, subprocess.Popen[bytes]]


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _request_head(length: int, path: str = "/denoise") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _read_response(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
        data = b"".join(chunks)
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:") and len(body) >= int(line.split(b":")[1]):
                return data
    return b"".join(chunks)


@pytest.fixture(scope="module")
def guarded() -> Iterator[Server]:
    env = {
        **TEST_SETTINGS,
        "DENOISE_HEADER_TIMEOUT_S": "1",
        "DENOISE_BODY_TIMEOUT_S": "1.5",
        "DENOISE_MAX_INFLIGHT": "4",
    }
    with running_server(env) as server:
        yield server


def test_slow_headers_are_cut_off(guarded: Server) -> None:
    """A client sending its headers one byte at a time cannot hold the connection."""
    with socket.create_connection(_address(guarded[0]), timeout=5) as sock:
        started = time.monotonic()
        closed = False
        for byte in _request_head(100):
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 4:
                break
        if not closed:
            sock.settimeout(3)
            closed = sock.recv(1024) == b""
    assert closed
    assert time.monotonic() - started < 4


def test_idle_connection_without_request_is_closed(guarded: Server) -> None:
    with socket.create_connection(_address(guarded[0]), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < 3


def test_slow_body_gets_408(guarded: Server) -> None:
    body = png(digit(1))
    with socket.create_connection(_address(guarded[0]), timeout=5) as sock:
        sock.sendall(_request_head(len(body)))
        started = time.monotonic()
        for byte in body[:4]:  # a byte every 0.3 s, then nothing more
            sock.send(bytes([byte]))
            time.sleep(0.3)
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b'"code":"request_timeout"' in response
    assert time.monotonic() - started < 4


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    """Four requests in flight at most, the default header and body deadlines: a flood of uploads on a busy
    machine must meet the in-flight limit, not the 1.5 s body deadline of :func:`guarded` (whose 408 closes a
    connection still sending, and the client sees a reset)."""
    with running_server({**TEST_SETTINGS, "DENOISE_MAX_INFLIGHT": "4"}) as server:
        yield server


def test_overload_sheds_with_503_and_accepted_requests_are_correct(limited: Server) -> None:
    url = limited[0]
    images = [png(digit(seed)) for seed in range(8)]
    batch = [("file", (f"{i}.png", images[i % 8], "image/png")) for i in range(32)]
    with httpx.Client(base_url=url) as client:
        expected = client.post("/denoise", files=batch).json()["images"]

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            responses: list[httpx.Response] = []
            deadline = time.monotonic() + 3  # bounded in time and in requests (at most 3 x 64)
            while time.monotonic() < deadline and len(responses) < 192:
                responses += await asyncio.gather(*(client.post("/denoise", files=batch) for _ in range(64)))
            return responses

    responses = asyncio.run(flood())
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}
    shed = [r for r in responses if r.status_code == 503]
    accepted = [r for r in responses if r.status_code == 200]
    assert shed, "the in-flight limit never shed"
    assert accepted
    for response in shed:
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "overloaded"
    for response in accepted:
        assert response.json()["images"] == expected
    with httpx.Client(base_url=url) as client:  # recovered
        assert client.get("/health/ready").status_code == 200
        for image in images:
            assert client.post("/denoise", content=image, headers={"content-type": "image/png"}).status_code == 200


def test_health_is_never_limited(guarded: Server) -> None:
    with httpx.Client(base_url=guarded[0]) as client:
        for _ in range(20):
            assert client.get("/health/live").status_code == 200


def _read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` responses (head, body) from one connection, framed by Content-Length."""
    data = b""
    responses: list[tuple[bytes, bytes]] = []
    while len(responses) < count:
        head, separator, rest = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            None,
        )
        if separator and length is not None and len(rest) >= length:
            responses.append((head, rest[:length]))
            data = rest[length:]
            continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(responses)} of {count} responses"
        data += chunk
    return responses


def _live_request(extra: str = "", version: str = "1.1") -> bytes:
    return f"GET /health/live HTTP/{version}\r\nHost: test\r\n{extra}\r\n".encode()


def test_liveness_answered_before_the_app_keeps_the_connection(guarded: Server) -> None:
    """/health/live is answered by the protocol layer; the connection then serves the app as usual."""
    with socket.create_connection(_address(guarded[0]), timeout=5) as sock:
        sock.sendall(_live_request("X-Request-ID: probe-7\r\n"))
        ((head, body),) = _read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"content-type: application/json" in head
        assert b"x-request-id: probe-7" in head
        assert body == b'{"status":"alive"}'
        sock.sendall(_live_request())  # a second probe, then the app, on the same connection
        sock.sendall(b"GET /health/ready HTTP/1.1\r\nHost: test\r\n\r\n")
        (live, ready) = _read_responses(sock, 2)
    assert live[1] == b'{"status":"alive"}'
    assert len(next(line for line in live[0].split(b"\r\n") if line.startswith(b"x-request-id:"))) > 20
    assert ready[0].startswith(b"HTTP/1.1 200")
    assert b'"status":"ready"' in ready[1]


def test_liveness_over_http_1_0_closes_the_connection(guarded: Server) -> None:
    with socket.create_connection(_address(guarded[0]), timeout=5) as sock:
        sock.sendall(_live_request(version="1.0"))
        ((head, body),) = _read_responses(sock, 1)
        assert b"connection: close" in head
        assert body == b'{"status":"alive"}'
        assert sock.recv(1024) == b""


def test_pipelined_liveness_waits_for_the_request_before_it(guarded: Server) -> None:
    """Responses keep request order: a probe pipelined behind a batch is answered after it."""
    files = [("file", (f"{i}.png", png(digit(i)), "image/png")) for i in range(16)]
    batch = httpx.Request("POST", f"{guarded[0]}/denoise", files=files)
    body = batch.read()
    head = (
        f"POST /denoise HTTP/1.1\r\nHost: test\r\nContent-Type: {batch.headers['content-type']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(_address(guarded[0]), timeout=5) as sock:
        sock.sendall(head + body + _live_request())
        (first, second) = _read_responses(sock, 2)
    assert first[0].startswith(b"HTTP/1.1 200")
    assert len(json.loads(first[1])["images"]) == 16
    assert second[1] == b'{"status":"alive"}'


def test_sigterm_finishes_accepted_requests_then_exits_0() -> None:
    with running_server({**TEST_SETTINGS, "DENOISE_SHUTDOWN_GRACE_S": "20"}) as (url, process):
        body = png(digit(2))
        with httpx.Client(base_url=url) as client:
            expected = client.post("/denoise", content=body, headers={"content-type": "image/png"}).content
        sockets = []
        for _ in range(5):  # five requests in flight: headers and half the body sent
            sock = socket.create_connection(_address(url), timeout=10)
            sock.sendall(_request_head(len(body)) + body[: len(body) // 2])
            sockets.append(sock)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):  # no new connections once shutting down
            httpx.get(f"{url}/health/live", timeout=1)
        for sock in sockets:
            sock.sendall(body[len(body) // 2 :])
            response = _read_response(sock)
            sock.close()
            assert response.startswith(b"HTTP/1.1 200"), response[:200]
            assert response.partition(b"\r\n\r\n")[2] == expected
        assert process.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"DENOISE_PROVIDERS": "tpu"}, "configuration error: DENOISE_PROVIDERS"),
        ({"DENOISE_PROVIDERS": "cuda"}, "DENOISE_PROVIDERS=cuda but this onnxruntime build has no CUDA provider"),
        ({"DENOISE_PORT": "99999"}, "configuration error: DENOISE_PORT"),
        ({"OTEL_TRACES_EXPORTER": "jaegr"}, "OTEL_TRACES_EXPORTER names 'jaegr', which is not installed; installed:"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, "is not supported"),
    ],
    ids=["unknown-provider", "cuda-without-gpu", "bad-port", "unknown-trace-exporter", "unknown-otlp-protocol"],
)
def test_bad_settings_stop_with_a_clear_message(setting: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO,
        env={**os.environ, **setting},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_soak_script_keeps_memory_flat() -> None:
    """The soak script, with a small count here; the README gives the 100,000-request figure."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--requests", "3000", "--max-growth", "0.10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resident memory" in result.stdout
