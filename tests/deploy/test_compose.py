"""docker-compose.yml's `denoise` service, up on a real engine (host network), answering, and down."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.derive import on_host_network, project_services, replica_environment
from tests.deploy.engine import Engine, compose_project
from tests.docs import blocks
from tests.load import SAMPLE
from tests.server import MODELS, REPO, free_port

pytestmark = pytest.mark.container


def test_denoise_service_comes_up_answers_and_goes_down_cleanly(engine: Engine, image: float, tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    service = on_host_network(project_services()["denoise"], replica_environment(port, grpc_port))
    # The service's own variables, set as a user sets them in the shell or an .env file.
    env = {"HOST_MODEL_DIR": str(MODELS), "DENOISE_WORKERS": "1", "DENOISE_LOG_LEVEL": "info"}
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


def test_the_real_compose_file_validates_with_every_profile(engine: Engine) -> None:
    """docker-compose.yml as shipped, interpolated and validated by compose itself, with the profiles the
    deploy page's commands name (the GPU and scale services are not started here)."""
    argv = ["docker-compose", "--file", str(REPO / "docker-compose.yml"), "--profile", "gpu", "--profile", "scale"]
    # NGINX_IMAGE empty, as on a machine that never set it (the tests set it for the local image)
    config = yaml.safe_load(engine.command([*argv, "config"], cwd=REPO, env={"NGINX_IMAGE": ""}).stdout)
    assert set(config["services"]) == {"denoise", "denoise-gpu", "replica", "balancer"}
    assert config["services"]["balancer"]["image"] == "nginx:1.27-alpine"  # NGINX_IMAGE unset: the default
    assert config["services"]["denoise"]["environment"]["DENOISE_WORKERS"] == "2"
    for line in blocks("docs/deploy.md", section="docker compose")[0].splitlines():
        words = line.split("#")[0].split()
        assert words[:2] == ["docker", "compose"]
        profiles = [words[i + 1] for i, word in enumerate(words) if word == "--profile"]
        assert set(profiles) <= {"gpu", "scale"}
        services = [word for word in words[words.index("up") + 1 :] if not word.startswith("-") and "=" not in word]
        assert set(services) <= set(config["services"])
