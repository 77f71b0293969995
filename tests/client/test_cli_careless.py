"""``denoise-client`` as a careless user runs it, in a subprocess on real files: nothing that exists is
replaced unasked, a folder run resumes and never reads its own outputs, answers that are not the
service's are errors, bad flags and inputs are one line with the documented exit status, never a
traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from denoise_client.cli import (
    EXIT_BAD_ANSWER,
    EXIT_INTERRUPTED,
    EXIT_NO_ANSWER,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
)
from tests.conftest import REPO, decode_png, digit, png
from tests.server import free_port, running_server

SAMPLE = REPO / "tests" / "data" / "noisy-digit.png"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server() as (address, _):
        yield address


def client(*argv: str, url: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"DENOISE_URL": url} if url else {})}
    return subprocess.run(
        [sys.executable, "-m", "denoise_client.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def one_error_line(result: subprocess.CompletedProcess[str], status: int, says: str) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert says in lines[0], lines[0]


def test_an_existing_output_is_not_replaced_without_force(url: str, tmp_path: Path) -> None:
    out = tmp_path / "clean.png"
    out.write_bytes(b"my earlier work")
    one_error_line(client("denoise", str(SAMPLE), "-o", str(out), url=url), EXIT_USAGE, "add --force")
    assert out.read_bytes() == b"my earlier work"
    assert client("denoise", str(SAMPLE), "-o", str(out), "--force", url=url).returncode == EXIT_OK
    decode_png(out.read_bytes())


def test_the_input_is_never_its_own_output(url: str, tmp_path: Path) -> None:
    image = tmp_path / "scan.png"
    image.write_bytes(SAMPLE.read_bytes())
    one_error_line(client("denoise", str(image), "-o", str(image), "--force", url=url), EXIT_USAGE, "input itself")
    assert image.read_bytes() == SAMPLE.read_bytes()
    one_error_line(client("denoise", str(tmp_path), "-o", str(tmp_path), url=url), EXIT_USAGE, "input folder itself")


def test_encode_and_reconstruct_refuse_to_replace_too(url: str, tmp_path: Path) -> None:
    latent = tmp_path / "latent.json"
    latent.write_text("{}")
    one_error_line(client("encode", str(SAMPLE), "-o", str(latent), url=url), EXIT_USAGE, "add --force")
    rebuilt = tmp_path / "rebuilt.png"
    rebuilt.write_bytes(b"kept")
    one_error_line(client("reconstruct", str(SAMPLE), "-o", str(rebuilt), url=url), EXIT_USAGE, "add --force")
    assert rebuilt.read_bytes() == b"kept"


def test_a_folder_run_twice_resumes_and_never_reads_its_outputs(url: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(3):
        (tree / f"{i}.png").write_bytes(png(digit(i)))
    (tree / "sub" / "s.png").write_bytes(png(digit(7)))
    out = tree / "out"  # inside the input folder, as in the report
    first = client("denoise", str(tree), "-o", str(out), "-r", url=url)
    assert first.returncode == EXIT_OK, first.stderr
    assert "4 denoised" in first.stdout
    second = client("denoise", str(tree), "-o", str(out), "-r", url=url)
    assert second.returncode == EXIT_OK, second.stderr
    assert "0 denoised" in second.stdout
    assert "4 already there" in second.stdout
    assert not (out / "out").exists()  # its own outputs were not taken as inputs
    (out / "1.png").unlink()  # as if the first run had stopped before it
    third = client("denoise", str(tree), "-o", str(out), "-r", url=url)
    assert "1 denoised" in third.stdout
    assert "3 already there" in third.stdout


def test_a_folder_output_that_is_not_a_png_is_reported_not_replaced(url: str, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    (source / "a.png").write_bytes(png(digit(1)))
    (out / "a.png").write_text("notes I keep here")
    result = client("denoise", str(source), "-o", str(out), url=url)
    assert result.returncode == EXIT_REFUSED
    assert "exists and is not a PNG; --force replaces it" in result.stdout
    assert (out / "a.png").read_text() == "notes I keep here"


def test_a_broken_symlink_and_a_large_file_are_named_for_what_they_are(url: str, tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (source / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    (source / "ok.png").write_bytes(png(digit(2)))
    result = client("denoise", str(source), "-o", str(tmp_path / "out"), "--max-bytes", "1000", url=url)
    assert "skipped gone.png: a broken symbolic link" in result.stdout
    assert "failed  huge.png: 2008 bytes, over --max-bytes 1000" in result.stdout
    assert "1 denoised" in result.stdout


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as handle:  # sparse: 64 MiB on disk costs nothing
        handle.truncate(64 * 1024 * 1024)
    result = client("denoise", str(big), "-o", str(tmp_path / "x.png"), url=url)
    one_error_line(result, EXIT_USAGE, "over --max-bytes 4194304")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--timeout", "0"], "--timeout: 0 is not a number of seconds above 0"),
        (["--timeout", "-1"], "above 0"),
        (["--retries", "-1"], "--retries: -1 is not a count of 0 or more"),
        (["--max-bytes", "0"], "--max-bytes"),
    ],
)
def test_bad_flags_are_refused_before_any_work(tmp_path: Path, flags: list[str], says: str) -> None:
    result = client("denoise", str(SAMPLE), "-o", str(tmp_path / "x.png"), *flags)
    assert result.returncode == EXIT_USAGE
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[1, 2, 3]", "not latents as 'encode' writes them"),
        ('{"latents": []}', "not latents"),
        ("{not json", "is not JSON"),
    ],
)
def test_reconstruct_of_json_that_is_not_latents(tmp_path: Path, content: str, says: str) -> None:
    source = tmp_path / "latent.json"
    source.write_text(content)
    one_error_line(client("reconstruct", str(source), "-o", str(tmp_path / "r.png")), EXIT_USAGE, says)


def test_a_v2_url_gets_the_servers_message_not_a_traceback(url: str, tmp_path: Path) -> None:
    result = client("denoise", str(SAMPLE), "-o", str(tmp_path / "x.png"), "--url", f"{url}/v2")
    one_error_line(result, EXIT_REFUSED, "404")


def test_no_answer_and_a_timeout_get_different_advice(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/prefix"
    refused = client("denoise", str(SAMPLE), "-o", str(tmp_path / "x.png"), "--url", nobody, "--retries", "0")
    one_error_line(refused, EXIT_NO_ANSWER, f"no answer from {nobody}/denoise")  # the prefix kept
    assert "--url" in refused.stderr
    with _fake_server(delay=3.0) as slow:
        timed = client("denoise", str(SAMPLE), "-o", str(tmp_path / "y.png"), "--url", slow, "--timeout", "0.5")
    one_error_line(timed, EXIT_NO_ANSWER, "did not answer within the timeout")
    assert "raise --timeout" in timed.stderr


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html>proxy login</html>"),
        ("image/png", b"GIF89a not a png"),
        ("application/json", b'{"model": "mnist"}'),
    ],
)
def test_an_answer_that_is_not_the_services_is_an_error_not_a_file(
    tmp_path: Path, content_type: str, body: bytes
) -> None:
    out = tmp_path / "x.png"
    with _fake_server(content_type=content_type, body=body) as fake:
        result = client("denoise", str(SAMPLE), "-o", str(out), "--url", fake)
    one_error_line(result, EXIT_BAD_ANSWER, "is that the denoise service")
    assert not out.exists()


CLIENT = [sys.executable, "-m", "denoise_client.cli"]


def test_ctrl_c_during_a_folder_run_says_what_was_done(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):
        (source / f"{i}.png").write_bytes(png(digit(i)))
    with _fake_server(delay=60.0) as slow:
        process = subprocess.Popen(
            # The client's own timeout well past the test's: only the interrupt may end the request.
            [*CLIENT, "denoise", str(source), "-o", str(tmp_path / "out"), "--timeout", "120"],
            env={**os.environ, "DENOISE_URL": slow},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A shell's background job without job control (a CI runner's, say) starts with SIGINT ignored, and
            # Python keeps an ignored SIGINT as it is; Ctrl-C at a terminal reaches a client with the default one.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        _wait_for_request(slow)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    assert "interrupted; 0 of 3 done (kept), 3 left: run the same command again" in err


def test_exit_codes_are_listed_in_help_and_the_readme() -> None:
    helped = client("--help").stdout
    readme = (REPO / "client" / "README.md").read_text()
    for status in (EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_BAD_ANSWER, EXIT_INTERRUPTED):
        assert f"{status} " in helped
        assert f"| {status} |" in readme


# ---------- a stand-in for a proxy or a slow server ----------

_REQUESTS: dict[str, int] = {}


class _Handler(BaseHTTPRequestHandler):
    content_type = "text/html"
    body = b""
    delay = 0.0

    def do_POST(self) -> None:
        _REQUESTS[self.server.url] = _REQUESTS.get(self.server.url, 0) + 1  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("content-type", self.content_type)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _fake_server:  # noqa: N801 - used as a context manager, like a function
    def __init__(self, content_type: str = "text/html", body: bytes = b"", delay: float = 0.0) -> None:
        handler = type("Handler", (_Handler,), {"content_type": content_type, "body": body, "delay": delay})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.server.url = self.url  # type: ignore[attr-defined]
        _REQUESTS[self.url] = 0  # a port handed out again: the count is this server's alone

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_for_request(url: str) -> None:
    deadline = time.monotonic() + 30
    while not _REQUESTS.get(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _REQUESTS.get(url), "the client never sent its request"


def test_the_fake_server_answers(tmp_path: Path) -> None:
    """The stand-in itself, so that a failure above is the client's."""
    import httpx

    with _fake_server(content_type="application/json", body=json.dumps({"ok": 1}).encode()) as fake:
        assert httpx.post(fake, content=b"x").json() == {"ok": 1}
