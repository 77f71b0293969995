"""The client library and command line against a real server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from denoise_client import (
    AsyncClient,
    Client,
    InvalidInput,
    ModelNotFound,
    ServiceUnavailable,
    TransportFailure,
    Unauthorized,
)
from denoise_client.cli import main as cli
from denoise_client.client import Retry
from tests.conftest import MODEL, REPO, decode_png, digit, png
from tests.docs import blocks
from tests.images import assert_int8_close
from tests.server import TEST_SETTINGS, free_port, running_server

SAMPLE = REPO / "tests" / "data" / "noisy-digit.png"
FAST_RETRY = Retry(attempts=3, backoff=0.01)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server() as (address, _):
        yield address


def test_denoise_path_returns_png_bytes(url: str) -> None:
    with Client(url) as client:
        decode_png(client.denoise(SAMPLE))


def test_denoise_returns_the_kind_it_was_given(url: str) -> None:
    array = digit(1)
    with Client(url) as client:
        out_array = client.denoise(array)
        out_pil = client.denoise(Image.fromarray(array))
        out_bytes = client.denoise(png(array))
    assert isinstance(out_array, np.ndarray)
    assert out_array.shape == (28, 28)
    assert out_array.dtype == np.uint8
    assert isinstance(out_pil, Image.Image)
    assert np.array_equal(np.asarray(out_pil), out_array)
    assert np.array_equal(decode_png(out_bytes), out_array)


def test_float_arrays_are_accepted(url: str) -> None:
    with Client(url) as client:
        assert client.denoise(digit(2).astype(np.float32) / 255).shape == (28, 28)


def test_batch_in_one_request_keeps_order(url: str) -> None:
    arrays = [digit(seed) for seed in range(5)]
    with Client(url) as client:
        batch = client.denoise(arrays)
        singles = [client.denoise(a) for a in arrays]
    assert len(batch) == 5
    for got, single in zip(batch, singles, strict=True):
        assert np.abs(got.astype(int) - single.astype(int)).max() <= 1


def test_encode_and_reconstruct_round_trip(url: str) -> None:
    with Client(url) as client:
        latents = client.encode([digit(3), digit(4)])
        assert latents["model"] == MODEL
        assert len(latents["latents"]) == 2
        images = client.reconstruct(latents, kind="numpy")
        denoised = client.denoise([digit(3), digit(4)])
    # Latents decode through the float32 decoder; /denoise runs the bundle's int8 autoencoder on CPU.
    assert_int8_close(np.stack(denoised), np.stack(images))


def test_models_and_health(url: str) -> None:
    with Client(url) as client:
        assert client.models()["models"][0]["name"] == MODEL
        assert client.health()["status"] == "ready"


def test_errors_are_typed_with_server_message(url: str) -> None:
    with Client(url, retry=FAST_RETRY) as client:
        with pytest.raises(ModelNotFound, match="no model named 'nope'") as not_found:
            client.denoise(SAMPLE, model="nope")
        assert not_found.value.request_id
        with pytest.raises(InvalidInput, match="32x32"):
            client.denoise(np.zeros((32, 32), dtype=np.uint8))


def test_async_client(url: str) -> None:
    async def scenario() -> tuple[list[np.ndarray], dict[str, object]]:
        async with AsyncClient(url) as client:
            results = await asyncio.gather(*(client.denoise(digit(seed)) for seed in range(4)))
            return list(results), await client.models()

    results, models = asyncio.run(scenario())
    assert all(r.shape == (28, 28) for r in results)
    assert models["default_model"] == MODEL


class _Flaky(BaseHTTPRequestHandler):
    """503 (Retry-After: 0) for the first ``failures`` requests, then a PNG; or a slow answer."""

    failures = 2
    delay = 0.0
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(self.delay)
        if type(self).calls <= self.failures:
            body = json.dumps({"error": {"status": 503, "code": "overloaded", "message": "busy"}}).encode()
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("content-type", "application/json")
        else:
            body = png(digit(0))
            self.send_response(200)
            self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client timed out and left
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_retries_503_then_succeeds() -> None:
    handler: type[_Flaky] = type("Flaky", (_Flaky,), {"failures": 2, "calls": 0})
    server, address = _serve(handler)
    try:
        with Client(address, retry=FAST_RETRY) as client:
            decode_png(client.denoise(png(digit(0))))
        assert handler.calls == 3
    finally:
        server.shutdown()


def test_gives_up_after_retries_on_503() -> None:
    handler: type[_Flaky] = type("Busy", (_Flaky,), {"failures": 100, "calls": 0})
    server, address = _serve(handler)
    try:
        with Client(address, retry=Retry(attempts=2, backoff=0.01)) as client, pytest.raises(ServiceUnavailable):
            client.denoise(png(digit(0)))
        assert handler.calls == 3
    finally:
        server.shutdown()


class _Refusing(_Flaky):
    """422 for every request, counted."""

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"error": {"status": 422, "code": "invalid_input", "message": "image is 30x30"}}).encode()
        self.send_response(422)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_4xx_is_never_retried(url: str) -> None:
    with Client(url, retry=FAST_RETRY) as client, pytest.raises(InvalidInput):
        client.denoise(np.zeros((30, 30), dtype=np.uint8))  # the real service's refusal
    handler: type[_Refusing] = type("Refusing", (_Refusing,), {"calls": 0})
    server, address = _serve(handler)
    try:
        with Client(address, retry=FAST_RETRY) as client, pytest.raises(InvalidInput):
            client.denoise(png(digit(0)))
        assert handler.calls == 1
    finally:
        server.shutdown()


def test_timeout_raises_transport_failure() -> None:
    handler: type[_Flaky] = type("Slow", (_Flaky,), {"failures": 0, "calls": 0, "delay": 2.0})
    server, address = _serve(handler)
    try:
        with Client(address, timeout=0.2, retry=FAST_RETRY) as client:
            with pytest.raises(TransportFailure, match="ReadTimeout"):
                client.denoise(png(digit(0)))
            assert handler.calls == 1  # a read timeout is not retried: the request may have run
    finally:
        server.shutdown()


def test_connection_refused_is_retried_then_raised() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    with Client(address, retry=Retry(attempts=2, backoff=0.05)) as client:
        started = time.monotonic()
        with pytest.raises(TransportFailure, match="ConnectError") as failure:
            client.models()
        assert failure.value.url == f"{address}/models"
        assert time.monotonic() - started >= 0.15  # waited 0.05 + 0.1 between the tries


def test_cli_single_file_encode_and_reconstruct(url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    assert cli(["--url", url, "denoise", str(SAMPLE), "-o", str(out)]) == 0
    decode_png(out.read_bytes())
    latent = tmp_path / "latent.json"
    assert cli(["--url", url, "encode", str(SAMPLE), "-o", str(latent)]) == 0
    assert json.loads(latent.read_text())["latent_shape"]
    rebuilt = tmp_path / "rebuilt.png"
    assert cli(["--url", url, "reconstruct", str(latent), "-o", str(rebuilt)]) == 0
    decode_png(rebuilt.read_bytes())


def test_cli_reads_url_from_environment(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DENOISE_URL", url)
    assert cli(["denoise", str(SAMPLE), "-o", str(tmp_path / "o.png")]) == 0


def test_cli_folder_mode_reports_failures(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(5):
        (source / f"{i}.png").write_bytes(png(digit(i)))
    (source / "broken.png").write_bytes(b"not a png")
    (source / "big.png").write_bytes(png(np.zeros((40, 40), dtype=np.uint8)))
    (source / "notes.txt").write_text("ignored")
    assert cli(["--url", url, "denoise", str(source), "-o", str(target)]) == 1
    assert sorted(p.name for p in target.iterdir()) == [f"{i}.png" for i in range(5)]
    captured = capsys.readouterr()
    assert "5 denoised" in captured.out
    assert "2 failed" in captured.out
    assert "broken.png" in captured.out
    assert "big.png: image is 40x40; send 28x28 or add --resize" in captured.out  # the CLI's flag, not the query
    assert "7/7 images" in captured.err
    assert "1 skipped" in captured.out
    assert "skipped notes.txt: not a .png file" in captured.out


def test_cli_folder_mode_lists_sub_folders_and_recurses_when_asked(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    (source / "inner" / "deeper").mkdir(parents=True)
    (source / "top.png").write_bytes(png(digit(1)))
    (source / "inner" / "a.png").write_bytes(png(digit(2)))
    (source / "inner" / "deeper" / "b.png").write_bytes(png(digit(3)))
    assert cli(["--url", url, "denoise", str(source), "-o", str(target)]) == 0
    assert "skipped inner/: a folder (add --recursive)" in capsys.readouterr().out
    assert cli(["denoise", str(source), "-o", str(target), "--recursive", "--url", url]) == 0
    assert "2 denoised" in capsys.readouterr().out  # top.png was done by the first run and is kept
    decode_png((target / "inner" / "deeper" / "b.png").read_bytes())
    decode_png((target / "inner" / "a.png").read_bytes())


def test_cli_options_work_after_the_command(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.png"
    assert cli(["denoise", str(SAMPLE), "-o", str(out), "--model", MODEL, "--url", url, "--timeout", "5"]) == 0
    decode_png(out.read_bytes())
    argv = ["--model", MODEL, "denoise", str(SAMPLE), "-o", str(out), "--url", url, "--model", "nope", "--force"]
    assert cli(argv) == 1
    assert "404 model_not_found: no model named 'nope'" in capsys.readouterr().err  # the later one wins


def test_cli_reinvert_gives_dark_on_light(url: str, tmp_path: Path) -> None:
    light, dark = tmp_path / "light.png", tmp_path / "dark.png"
    assert cli(["--url", url, "denoise", str(SAMPLE), "-o", str(light)]) == 0
    assert cli(["--url", url, "denoise", str(SAMPLE), "-o", str(dark), "--reinvert"]) == 0
    assert np.array_equal(decode_png(dark.read_bytes()), 255 - decode_png(light.read_bytes()))


def test_cli_without_a_server_names_the_url_and_how_to_set_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    assert cli(["denoise", str(SAMPLE), "-o", str(tmp_path / "x.png"), "--url", address, "--retries", "0"]) == 3
    err = capsys.readouterr().err
    assert f"no answer from {address}/denoise" in err
    assert "Traceback" not in err
    assert "--url or $DENOISE_URL" in err


def test_cli_error_exit_code(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    assert cli(["--url", url, "denoise", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    assert "400 undecodable_image" in capsys.readouterr().err


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    with running_server({**TEST_SETTINGS, "DENOISE_API_KEYS": "client-key"}) as (address, _):
        yield address


def test_client_sends_its_api_key(keyed_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DENOISE_API_KEY", raising=False)
    with Client(keyed_url) as client, pytest.raises(Unauthorized, match="missing API key"):
        client.models()
    with Client(keyed_url, api_key="wrong") as client, pytest.raises(Unauthorized, match="invalid API key"):
        client.models()
    with Client(keyed_url, api_key="client-key") as client:
        decode_png(client.denoise(SAMPLE))
    monkeypatch.setenv("DENOISE_API_KEY", "client-key")
    with Client(keyed_url) as client:
        assert client.models()["default_model"] == MODEL

    async def run() -> None:
        async with AsyncClient(keyed_url, api_key="client-key") as client:
            assert (await client.models())["default_model"] == MODEL

    asyncio.run(run())


def test_cli_api_key(
    keyed_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DENOISE_API_KEY", raising=False)
    out = tmp_path / "out.png"
    assert cli(["denoise", str(SAMPLE), "-o", str(out), "--url", keyed_url]) == 1
    err = capsys.readouterr().err
    assert "401 unauthorized: missing API key" in err
    assert "--api-key or $DENOISE_API_KEY" in err
    assert cli(["denoise", str(SAMPLE), "-o", str(out), "--url", keyed_url, "--api-key", "client-key"]) == 0
    monkeypatch.setenv("DENOISE_API_KEY", "client-key")
    assert cli(["--url", keyed_url, "encode", str(SAMPLE)]) == 0


def _readme_block(language: str) -> str:
    """The first ```language block of client/README.md."""
    return blocks("client/README.md", language)[0]


def _in_copy_of_tests(tmp_path: Path) -> Path:
    (tmp_path / "tests").symlink_to(REPO / "tests")
    return tmp_path


def test_readme_client_python_example(url: str, tmp_path: Path) -> None:
    code = _readme_block("python").replace("http://127.0.0.1:8000", url)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=_in_copy_of_tests(tmp_path), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"{MODEL} ready" in result.stdout
    assert "422 image is 32x32" in result.stdout


def test_readme_client_cli_examples(url: str, tmp_path: Path) -> None:
    lines = [line.split("  #")[0] for line in _readme_block("sh").splitlines() if line.startswith("denoise")]
    assert len(lines) == 4
    cwd = _in_copy_of_tests(tmp_path)
    cli_path = Path(sys.executable).parent
    env = {**os.environ, "DENOISE_URL": url, "PATH": f"{cli_path}:{os.environ['PATH']}"}
    for line in lines:
        result = subprocess.run(line, shell=True, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
    decode_png((cwd / "clean.png").read_bytes())
    decode_png((cwd / "rebuilt.png").read_bytes())
    assert (cwd / "cleaned" / "noisy-digit.png").is_file()


def test_scores_come_back_with_the_images(url: str) -> None:
    with Client(url) as client:
        threshold = next(m for m in client.models()["models"] if m["name"] == MODEL)["anomaly"]["threshold"]
        one = client.denoise(SAMPLE, with_scores=True)
        decode_png(one.images)
        assert len(one.anomaly_scores) == len(one.anomalous) == 1
        assert one.anomalous == [one.anomaly_scores[0] > threshold]
        flipped = png(255 - decode_png(SAMPLE.read_bytes()))
        batch = client.denoise([SAMPLE, flipped], with_scores=True)
        assert len(batch.images) == 2
        assert batch.anomalous[1]  # dark on light, sent without invert: flagged
        assert abs(batch.anomaly_scores[0] - one.anomaly_scores[0]) < 1e-3
        latents = client.encode([SAMPLE, flipped])
        assert latents["anomalous"] == batch.anomalous
        rebuilt = client.reconstruct(latents, with_scores=True)
        assert (rebuilt.anomaly_scores, rebuilt.anomalous) == ([], [])  # latents are not scored
        clean_test_digit = REPO / "models" / MODEL / "samples" / "00.png"
        assert client.denoise(clean_test_digit, with_scores=True).anomalous == [False]


def test_async_client_returns_scores(url: str) -> None:
    async def scenario() -> Any:
        async with AsyncClient(url) as client:
            return await client.reconstruct(SAMPLE, with_scores=True)

    scored = asyncio.run(scenario())
    assert len(scored.anomaly_scores) == 1
