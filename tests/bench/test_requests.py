"""bench/requests.py: each request ``--request`` names is one the service answers (the bodies it writes
are checked against a running service); ``bench.cpu --request`` measures our service alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.load import GRPC_INFER_PATH, grpc_failures, grpc_png_body, h2load_grpc
from bench.requests import REQUESTS, workload
from tests.server import REPO, TEST_SETTINGS, free_port, running_server

pytestmark = pytest.mark.slow


def test_every_http_request_is_answered_with_200(tmp_path: Path) -> None:
    with running_server({**TEST_SETTINGS, "DENOISE_MAX_BATCH_IMAGES": "256"}) as (url, _):
        for name in REQUESTS:
            load = workload(name, tmp_path)
            if load.grpc_port is not None:
                continue  # HTTP/2: the next test
            headers = {"content-type": load.content_type, **dict([load.header] if load.header else [])}
            response = httpx.post(f"{url}{load.path}", content=load.body.read_bytes(), headers=headers)
            assert response.status_code == 200, (name, response.text[:300])
            if name == "batch256":
                assert len(response.json()["images"]) == load.images == 256


def test_a_request_other_than_denoise_measures_our_service_alone() -> None:
    if shutil.which("wrk") is None and not os.environ.get("CI"):
        pytest.skip("needs wrk (apt-get install wrk; .ci/run installs it)")
    command = [sys.executable, "-m", "bench.cpu", "--rounds", "1", "--seconds", "1", "--request", "encode"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^ours +CPU [\d.]+ ms/request .* errors 0", result.stdout, re.MULTILINE)
    assert "lean script" not in result.stdout


def test_grpc_calls_from_h2load_are_answered_and_their_failures_counted(tmp_path: Path) -> None:
    """h2load sees HTTP 200 for every call (a gRPC status travels in the trailers); the service's
    metrics tell the calls it refused."""
    if shutil.which("h2load") is None and not os.environ.get("CI"):
        pytest.skip("needs h2load (apt-get install nghttp2-client; .ci/run installs it)")
    port = free_port()
    with running_server({**TEST_SETTINGS, "DENOISE_GRPC_PORT": str(port)}) as (url, _):
        address = f"http://127.0.0.1:{port}{GRPC_INFER_PATH}"
        good = h2load_grpc(address, grpc_png_body(tmp_path / "good.body"), 2, 1)
        assert good["requests"] > 0
        assert good["non_2xx"] == good["timeout"] == 0
        assert good["p50_us"] <= good["p99_us"] <= good["max_us"]
        assert grpc_failures(url) == 0
        bad = h2load_grpc(address, grpc_png_body(tmp_path / "bad.body", model="no-such-model"), 2, 1)
        assert bad["requests"] > 0
        assert bad["non_2xx"] == 0
        # and the calls still in flight when h2load's time was up: answered, or cancelled (not counted)
        assert bad["requests"] <= grpc_failures(url) <= bad["requests"] + 2


def test_the_grpc_floor_is_measured_beside_our_grpc_door() -> None:
    if (shutil.which("wrk") is None or shutil.which("h2load") is None) and not os.environ.get("CI"):
        pytest.skip("needs wrk and h2load (apt-get install wrk nghttp2-client; .ci/run installs them)")
    command = [sys.executable, "-m", "bench.cpu", "--rounds", "1", "--seconds", "1", "--request", "grpc", "--floor"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # our service counts the calls it refused (none); the floor answers every call
    assert re.search(
        r"^ours +CPU [\d.]+ ms/request .* errors 0 +[\d.]+ images per ONNX Runtime call$", result.stdout, re.M
    )
    assert re.search(r"^gRPC floor, int8 graph +CPU [\d.]+ ms/request .* errors 0$", result.stdout, re.MULTILINE)
