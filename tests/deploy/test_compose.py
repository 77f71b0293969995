"""docker-compose.yml's `denoise` service, up on a real engine (host network), answering, and down."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.deploy.derive import on_host_network, project_services, replica_environment
from tests.deploy.engine import Engine, compose_project
from tests.load import SAMPLE
from tests.server import MODELS, free_port

pytestmark = pytest.mark.container


def test_denoise_service_comes_up_answers_and_goes_down_cleanly(engine: Engine, image: float, tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    service = on_host_network(project_services()["denoise"], replica_environment(port, grpc_port))
    # The service's own variables, set as a user sets them in the shell or an .env file.
    env = {"DENOISE_MODELS_DIR": str(MODELS), "DENOISE_WORKERS": "1", "DENOISE_LOG_LEVEL": "info"}
    with compose_project(engine, tmp_path, {"services": {"denoise": service}}, env) as project:
        config = project("config").stdout  # compose's own interpolation and validation
        assert f"{MODELS}:/srv/models:ro" in config or f"source: {MODELS}" in config
        project("up", "--detach")
        name = project.container("denoise")
        engine.wait_healthy(name)
        url = f"http://127.0.0.1:{port}"
        response = httpx.post(f"{url}/denoise", content=SAMPLE, headers={"content-type": "image/png"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        settings = json.loads(engine.inspect(name, "{{json .Config.Env}}"))
        assert "DENOISE_WORKERS=1" in settings
        assert engine.inspect(name, "{{.HostConfig.RestartPolicy.Name}}") == "unless-stopped"
        assert engine.inspect(name, "{{.HostConfig.NanoCpus}}") == str(2 * 10**9)  # the CPU limit
        project("stop")
        assert engine.inspect(name, "{{.State.ExitCode}}") == "0"
        project("down")
        assert project("ps", "--quiet").stdout.strip() == ""
