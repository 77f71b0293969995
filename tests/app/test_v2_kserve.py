"""KServe's own V2 clients (``kserve``: ``InferenceRESTClient`` and ``InferenceGRPCClient``) against a real
server, unchanged: health and readiness, model readiness and metadata, inference with JSON and binary
tensors and with PNG bytes, and errors. They run in a process of their own (tests/app/kserve_calls.py
says why). Triton's clients: test_v2_rest.py and test_v2_grpc.py."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL, REPO
from tests.server import TEST_SETTINGS, free_port, running_server

PNG_SIGNATURE = "89504e470d0a1a0a"


@pytest.fixture(scope="module")
def calls() -> dict[str, Any]:
    port = free_port()
    with running_server({**TEST_SETTINGS, "DENOISE_GRPC_PORT": str(port)}) as (url, _):
        done = subprocess.run(
            [sys.executable, "-m", "tests.app.kserve_calls", url, f"127.0.0.1:{port}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
        assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
        assert httpx.get(f"{url}/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    results: dict[str, Any] = json.loads(done.stdout)
    return results


@pytest.mark.parametrize("door", ["rest", "grpc"])
def test_health_and_readiness(calls: dict[str, Any], door: str) -> None:
    answers = calls[door]
    assert (answers["live"], answers["ready"], answers["model_ready"]) == (True, True, True)
    assert answers["unknown_ready"] is False


@pytest.mark.parametrize("form", ["json_tensors", "binary_tensors"])
def test_rest_float_tensors_to_a_graph(calls: dict[str, Any], form: str) -> None:
    outputs = calls["rest"][form]
    assert outputs["latent"] == {"shape": [3, 7, 7, 8], "finite": True}
    assert outputs["anomaly_score"] == {"shape": [3, 1], "finite": True}


def test_grpc_float_tensors_to_a_graph(calls: dict[str, Any]) -> None:
    assert calls["grpc"]["binary_tensors"]["denoised"] == {"shape": [2, 28, 28, 1], "finite": True}


@pytest.mark.parametrize(("door", "count"), [("rest", 2), ("grpc", 1)])
def test_png_bytes_in_and_out(calls: dict[str, Any], door: str, count: int) -> None:
    denoised = calls[door]["png"]["denoised_png"]
    assert denoised["shape"] == [count]
    assert denoised["png"] == [PNG_SIGNATURE] * count


def test_errors_carry_the_services_status_and_message(calls: dict[str, Any]) -> None:
    assert calls["rest"]["unknown_model"]["status"] == 404
    assert "no-such-model" in calls["rest"]["unknown_model"]["error"]
    assert calls["rest"]["wrong_input"]["status"] == 400
    assert "latent" in calls["rest"]["wrong_input"]["error"]
    assert calls["grpc"]["unknown_model"]["code"] == "NOT_FOUND"


def test_metadata_and_a_long_name_through_kserves_stub(calls: dict[str, Any]) -> None:
    assert calls["metadata"]["inputs"] == [{"name": "latent", "shape": [-1, 7, 7, 8], "datatype": "FP32"}]
    long_name = calls["metadata"]["long_name"]
    assert long_name["code"] == "NOT_FOUND"  # not RESOURCE_EXHAUSTED: the name is quoted clipped
    assert len(long_name["error"]) < 1000
