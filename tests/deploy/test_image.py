"""The CPU image, built from the Dockerfile and run as Kubernetes runs it, on a real Docker engine."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.deploy.engine import IMAGE, Engine, container
from tests.load import SAMPLE, Load, access_lines
from tests.server import BUNDLES, MODELS, free_port, poll

pytestmark = pytest.mark.container

#: The image's size budget: the serving dependencies (onnxruntime, numpy, grpcio, Pillow, and imagecodecs,
#: whose libpng decodes the common upload and encodes every output: about 80 MB of codec libraries) on
#: Python slim, with the committed bundles (588 MB as built). A training library pulled in by mistake is
#: ten times this margin.
SIZE_BUDGET_MB = 640
#: What Kubernetes sets (deploy/k8s/deployment.yaml): read-only root, a writable /tmp, no capabilities.
AS_KUBERNETES = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def _address(port: int) -> tuple[str, ...]:
    return ("--env", "DENOISE_HOST=127.0.0.1", "--env", f"DENOISE_PORT={port}")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_image_builds_within_its_size_budget(engine: Engine, image: float) -> None:
    size_mb = int(engine.inspect(IMAGE, "{{.Size}}")) / 1e6
    print(f"\nimage {IMAGE}: {size_mb:.0f} MB, built in {image:.1f} s")
    assert size_mb <= SIZE_BUDGET_MB
    config = json.loads(engine.inspect(IMAGE, "{{json .Config}}"))
    assert config["User"] == "10001"
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "app.healthcheck"]
    # serving dependencies only
    listing = engine.run("run", "--rm", "--network", "host", "--entrypoint", "pip", IMAGE, "list", "--format", "json")
    installed = {package["name"].lower() for package in json.loads(listing.stdout)}
    assert {"onnxruntime", "fastapi", "uvicorn", "denoise"} <= installed
    assert not {"tensorflow", "tensorflow-cpu", "tf2onnx", "keras", "onnxruntime-gpu"} & installed


def test_runs_read_only_non_root_healthy_with_json_logs(engine: Engine, image: float) -> None:
    port, grpc_port = free_port(), free_port()
    options = (*AS_KUBERNETES, *_address(port), "--env", f"DENOISE_GRPC_PORT={grpc_port}", "--env", "DENOISE_WORKERS=2")
    with container(engine, *options) as name:
        url = f"http://127.0.0.1:{port}"
        start = time.monotonic()
        poll(lambda: _ready(url), 60, "ready")
        ready_s = time.monotonic() - start
        healthy_s = ready_s + engine.wait_healthy(name)
        print(f"\nready {ready_s:.1f} s after start, healthy at {healthy_s:.1f} s (HEALTHCHECK every 10 s)")
        assert engine.run("exec", name, "id", "-u").stdout.strip() == "10001"
        write = engine.run("exec", name, "touch", "/srv/models/x", check=False)
        assert write.returncode != 0
        assert "Read-only file system" in write.stderr
        models = httpx.get(f"{url}/models").json()
        assert sorted(model["name"] for model in models["models"]) == BUNDLES  # the committed bundles
        response = httpx.post(f"{url}/denoise", content=SAMPLE, headers={"content-type": "image/png"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            ready = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(service_pb2.ServerReadyRequest())
        assert ready.ready
        engine.run("stop", name)
        assert engine.inspect(name, "{{.State.ExitCode}}") == "0"
        lines = [line for line in engine.logs(name).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line of the container's output is JSON
    assert {record["level"] for record in records} <= {"DEBUG", "INFO", "WARNING"}
    assert any(record.get("path") == "/denoise" and record.get("status") == 200 for record in records)


def test_serves_a_mounted_bundle_with_settings_from_the_environment(
    engine: Engine, image: float, tmp_path: Path
) -> None:
    store = tmp_path / "models"
    shutil.copytree(MODELS / "fashion-mnist", store / "fashion-mnist", ignore=shutil.ignore_patterns("report"))
    for path in [store, *store.rglob("*")]:  # readable by uid 10001
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    options = (
        *AS_KUBERNETES, *_address(port), "--volume", f"{store}:/srv/models:ro",
        "--env", "DENOISE_GRPC_PORT=0", "--env", "DENOISE_WORKERS=1", "--env", "DENOISE_DEFAULT_MODEL=fashion-mnist",
        "--env", "DENOISE_API_KEYS=container-key", "--env", "DENOISE_LOG_FORMAT=text",
    )  # fmt: skip
    with container(engine, *options) as name:
        engine.wait_healthy(name)
        url = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{url}/denoise", content=SAMPLE).status_code == 401
        auth = {"authorization": "Bearer container-key"}
        models = httpx.get(f"{url}/models", headers=auth).json()
        assert [model["name"] for model in models["models"]] == ["fashion-mnist"]
        response = httpx.post(f"{url}/denoise", content=SAMPLE, headers={**auth, "content-type": "image/png"})
        assert response.status_code == 200
        assert response.headers["x-model"] == "fashion-mnist"
        logs = engine.logs(name)
    assert not logs.lstrip().startswith("{")  # DENOISE_LOG_FORMAT=text reached the service


def test_docker_stop_under_load_answers_every_request_it_took(engine: Engine, image: float) -> None:
    port = free_port()
    grace_s = 30
    options = (*AS_KUBERNETES, *_address(port), "--env", "DENOISE_GRPC_PORT=0", "--env", "DENOISE_WORKERS=2",
               "--env", f"DENOISE_SHUTDOWN_GRACE_S={grace_s}", "--stop-timeout", str(grace_s + 10))  # fmt: skip
    with container(engine, *options) as name:
        engine.wait_healthy(name)
        with Load(f"http://127.0.0.1:{port}", threads=6) as load:
            load.wait_served(200)
            start = time.monotonic()
            engine.run("stop", name, timeout=grace_s + 30)
            stop_s = time.monotonic() - start
        print(f"\ndocker stop under load: {stop_s:.2f} s, outcomes {dict(load.outcomes)}")
        assert engine.inspect(name, "{{.State.ExitCode}}") == "0"
        taken = access_lines(engine.logs(name), "/denoise")
    assert stop_s < grace_s
    assert set(load.outcomes) <= {"200", "refused", "unanswered"}, load.outcomes  # no 5xx, no response cut short
    # Every request the service took was answered in full: one access line per 200 the clients read.
    assert [line["status"] for line in taken] == [200] * load.outcomes["200"]
