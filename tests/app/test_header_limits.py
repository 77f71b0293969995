"""Request headers are bounded in bytes and in fields (431), over a raw socket to the real server."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server import TEST_SETTINGS, running_server

LIMITS = {"DENOISE_MAX_HEADER_BYTES": "4096", "DENOISE_MAX_HEADERS": "20"}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with running_server({**TEST_SETTINGS, **LIMITS}) as running:
        yield running


def _exchange(url: str, chunks: list[bytes]) -> bytes:
    """Send ``chunks`` (stopping early if the server closes) and read the answer until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
        return answer


def _status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_headers_within_the_limits_are_served(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    response = httpx.get(f"{url}/models", headers={f"x-pad-{i}": "a" * 100 for i in range(15)})
    assert response.status_code == 200


def test_one_huge_header_line_gets_431_before_it_is_buffered(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    # 8 MB of one header value, sent in 64 KB pieces: the server stops reading long before the end.
    chunks = [b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: "] + [b"a" * 65536] * 128
    status, body = _status_and_body(_exchange(url, chunks))
    assert status == 431
    assert "DENOISE_MAX_HEADER_BYTES" in json.loads(body)["error"]["message"]


def test_many_header_lines_over_the_byte_limit_get_431(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    lines = b"".join(b"X-P%d: %s\r\n" % (i, b"b" * 1000) for i in range(10))
    status, _ = _status_and_body(_exchange(url, [b"GET /models HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"]))
    assert status == 431


def test_too_many_header_fields_get_431(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(30))
    status, body = _status_and_body(_exchange(url, [b"GET /models HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"]))
    assert status == 431
    assert "DENOISE_MAX_HEADERS" in json.loads(body)["error"]["message"]


def test_a_v2_path_gets_the_v2_error_shape(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(30))
    status, body = _status_and_body(_exchange(url, [b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"]))
    assert status == 431
    assert isinstance(json.loads(body)["error"], str)


def test_a_long_url_counts_against_the_limit(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    status, body = _status_and_body(_exchange(url, [b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]))
    assert status == 431
    assert len(body) < 1000  # the path is quoted clipped, not whole


def test_the_server_serves_on_after_refusals(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = server
    for _ in range(3):
        _exchange(url, [b"GET /models HTTP/1.1\r\nX-Pad: " + b"c" * 10000 + b"\r\n\r\n"])
    started = time.monotonic()
    assert httpx.get(f"{url}/health/live").status_code == 200
    assert time.monotonic() - started < 1.0


def test_headers_under_the_limit_sent_in_small_pieces_are_served(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    """Counted once however they arrive: 3 KB of headers (under 4096) in 100-byte pieces."""
    url, _ = server
    request = b"GET /health/ready HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-P%d: %s\r\n" % (i, b"d" * 190) for i in range(15)
    )
    request += b"Connection: close\r\n\r\n"
    pieces = [request[i : i + 100] for i in range(0, len(request), 100)]
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.002)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert _status_and_body(answer)[0] == 200
