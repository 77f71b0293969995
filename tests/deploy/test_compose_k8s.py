"""The deployment files' structure: compose, Dockerfile, nginx and Kubernetes (tests/deploy/test_*.py run them)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

K8S = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
K8S_RESOURCES = [p for p in K8S if p.name != "kustomization.yaml"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def test_default_service_is_port_healthcheck_volume_restart_and_limits(compose: dict[str, Any]) -> None:
    service = compose["services"]["denoise"]
    assert "profiles" not in service  # starts with a plain `docker compose up`
    assert service["build"]["target"] == "cpu"
    assert service["ports"] == ["${DENOISE_PORT:-8000}:8000", "${DENOISE_GRPC_PORT:-8001}:8001"]
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "app.healthcheck"]
    assert any(v.endswith(":/srv/models:ro") for v in service["volumes"])
    assert service["restart"] == "unless-stopped"
    limits = service["deploy"]["resources"]["limits"]
    assert limits["cpus"]
    assert limits["memory"]
    assert all(key.startswith("DENOISE_") for key in service["environment"])


def test_gpu_profile_reserves_a_gpu_and_requires_cuda(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["denoise-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    assert gpu["environment"]["DENOISE_PROVIDERS"] == "cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]


def test_scale_profile_puts_replicas_behind_nginx(compose: dict[str, Any]) -> None:
    replica, balancer = compose["services"]["replica"], compose["services"]["balancer"]
    assert replica["profiles"] == balancer["profiles"] == ["scale"]
    assert "ports" not in replica  # only the balancer is published
    assert balancer["depends_on"]["replica"]["condition"] == "service_healthy"
    upstream = (REPO / "deploy" / "nginx" / "upstream.conf").read_text()
    assert "server replica:8000 resolve" in upstream
    assert balancer["volumes"] == [
        "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro",
        "./deploy/nginx/upstream.conf:/etc/nginx/denoise-upstream.conf:ro",
    ]
    assert balancer["image"] == "${NGINX_IMAGE:-nginx:1.27-alpine}"  # `resolve` needs nginx 1.27.3 or later


def test_compose_healthcheck_and_dockerfile_use_the_same_probe(compose: dict[str, Any]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count('CMD ["python", "-m", "app.healthcheck"]') == 2
    assert compose["services"]["denoise"]["healthcheck"]["test"][1:] == ["python", "-m", "app.healthcheck"]


def test_dockerfile_targets_run_as_non_root_without_tensorflow() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM ${PYTHON_IMAGE} AS cpu" in dockerfile
    assert "FROM ${CUDA_IMAGE} AS gpu" in dockerfile
    assert dockerfile.count("USER 10001") == 2
    assert "sh install.sh deps cpu" in dockerfile
    assert "sh install.sh deps gpu" in dockerfile
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for extra in ("cpu", "gpu"):  # serving dependencies only: no TensorFlow in the images
        requirements = project["dependencies"] + project["optional-dependencies"][extra]
        assert not [r for r in requirements if "tensorflow" in r or "tf2onnx" in r]
    # dependencies are installed before the source is copied, so that layer stays cached
    for stage in dockerfile.split("\nFROM ")[1:]:
        assert stage.index("install.sh deps") < stage.index("COPY app app")


def _stage(dockerfile: str, name: str) -> list[str]:
    stage = dockerfile.split(" AS " + name + "\n", 1)[1].split("\nFROM ", 1)[0]
    return [line for line in stage.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]


def test_gpu_and_cpu_stages_build_the_app_the_same_way() -> None:
    """Only the CPU stage is built by the tests (no CUDA base image here); the GPU stage differs
    from it in the base, the ONNX Runtime build, the provider and the start period only."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert not dockerfile.startswith("# syntax=")  # BuildKit would pull that frontend from a registry
    cpu, gpu = _stage(dockerfile, "cpu"), _stage(dockerfile, "gpu")
    start = gpu.index(next(line for line in gpu if line.startswith("ENV VIRTUAL_ENV")))
    gpu = gpu[start:]  # after installing Python, which the slim image has
    differences = [(a, b) for a, b in zip(cpu, gpu, strict=True) if a != b]
    assert [(a.split()[0], b.split()[0]) for a, b in differences] == [
        ("RUN", "RUN"),
        ("ENV", "ENV"),
        ("HEALTHCHECK", "HEALTHCHECK"),
    ]
    assert differences[0] == ("RUN sh install.sh deps cpu", "RUN sh install.sh deps gpu")
    assert "DENOISE_PROVIDERS=cpu" in differences[1][0]
    assert "DENOISE_PROVIDERS=cuda" in differences[1][1]


def test_dockerignore_keeps_data_venvs_and_runs_out() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*"  # everything out, then the few paths the images copy
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "deploy/install.sh", "app", "denoise_bundle", "models"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("path", K8S_RESOURCES, ids=lambda p: p.name)
def test_kubernetes_manifests_validate_strictly(path: Path) -> None:
    for document in _documents(path):
        kubernetes_validate.validate(document, "1.33", strict=True)


def test_kubernetes_validation_catches_a_typo() -> None:
    deployment = copy.deepcopy(_documents(REPO / "deploy" / "k8s" / "deployment.yaml")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33", strict=True)


def test_deployment_probes_resources_and_autoscaler() -> None:
    (deployment,) = _documents(REPO / "deploy" / "k8s" / "deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    keys = env.pop("DENOISE_API_KEYS", "absent")
    assert keys is None  # from an optional Secret, not written in the manifest
    (secret,) = [item for item in container["env"] if item["name"] == "DENOISE_API_KEYS"]
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "denoise-api-keys", "key": "keys", "optional": True}
    assert grace > int(env["DENOISE_SHUTDOWN_GRACE_S"]) + container["lifecycle"]["preStop"]["sleep"]["seconds"] - 1
    (hpa,) = _documents(REPO / "deploy" / "k8s" / "hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (kustomization,) = _documents(REPO / "deploy" / "k8s" / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S_RESOURCES)


def test_grpc_port_is_exposed_and_checked_at_start() -> None:
    (deployment,) = _documents(REPO / "deploy" / "k8s" / "deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "grpc", "containerPort": 8001, "protocol": "TCP"} in container["ports"]
    assert container["startupProbe"]["exec"]["command"] == ["python", "-m", "app.healthcheck"]
    (service,) = _documents(REPO / "deploy" / "k8s" / "service.yaml")
    assert any(port["targetPort"] == "grpc" for port in service["spec"]["ports"])
    assert "EXPOSE 8000 8001" in (REPO / "Dockerfile").read_text()


def test_kserve_inference_service_runs_our_image_with_v2_probes() -> None:
    (service,) = _documents(REPO / "deploy" / "kserve" / "inferenceservice.yaml")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    (container,) = service["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "denoise:cpu"
    env = {item["name"]: item.get("value") for item in container["env"]}
    (port,) = container["ports"]
    assert env["DENOISE_PORT"] == str(port["containerPort"]) == "8080"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # The container is a plain Kubernetes container: it validates as one.
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": [container]}},
        "1.33",
        strict=True,
    )


def test_queue_autoscaling_overlay_scales_on_cpu_and_work_in_flight() -> None:
    overlay = REPO / "deploy" / "k8s" / "queue-autoscaling"
    (kustomization,) = _documents(overlay / "kustomization.yaml")
    assert kustomization["resources"] == ["../"]
    (patch,) = _documents(overlay / "hpa-queue.yaml")
    (hpa,) = _documents(REPO / "deploy" / "k8s" / "hpa.yaml")
    assert patch["metadata"]["name"] == hpa["metadata"]["name"]
    merged = copy.deepcopy(hpa)
    merged["spec"]["metrics"] = patch["spec"]["metrics"]  # a strategic merge replaces the metrics list
    kubernetes_validate.validate(merged, "1.33", strict=True)
    kinds = {metric["type"]: metric for metric in merged["spec"]["metrics"]}
    assert kinds["Resource"] == hpa["spec"]["metrics"][0]  # CPU as in the base
    name = kinds["Pods"]["pods"]["metric"]["name"]
    assert name == "denoise_model_work_in_flight"
    assert f'"{name}"' in (REPO / "app" / "metrics.py").read_text()  # a gauge the service exports
    (adapter,) = _documents(overlay / "prometheus-adapter-rules.yaml")
    (rule,) = adapter["rules"]
    assert rule["seriesQuery"].startswith(name + "{")
    assert rule["name"]["as"] == name
