"""The project's docker-compose.yml and nginx.conf, changed only as far as a host-network engine needs.

This engine has no bridge network: every container shares the host's, so each service gets a free
loopback port of its own instead of a published one. Everything else (images, environment,
volumes, healthchecks, limits, stop periods, nginx's proxying and error pages) is the project's own.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.engine import IMAGE
from tests.server import REPO

COMPOSE = REPO / "docker-compose.yml"
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
#: Where nginx.conf includes its list of replicas from.
UPSTREAM_PATH = "/etc/nginx/denoise-upstream.conf"
#: The balancer's port in nginx.conf and in its compose healthcheck.
BALANCER_PORT = 8080


def project_services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def on_host_network(service: dict[str, Any], environment: dict[str, str] | None = None) -> dict[str, Any]:
    """``service`` on the host network (no published ports), running the image the tests built."""
    service = copy.deepcopy(service)
    service.pop("ports", None)
    service.pop("build", None)
    service["network_mode"] = "host"
    if "environment" in service:
        service["image"] = IMAGE
        service["environment"] = {**service["environment"], **(environment or {})}
    return service


def replica_environment(port: int, grpc_port: int = 0) -> dict[str, str]:
    return {"DENOISE_HOST": "127.0.0.1", "DENOISE_PORT": str(port), "DENOISE_GRPC_PORT": str(grpc_port)}


def balancer_conf(port: int, read_timeout_s: int | None = None) -> str:
    """nginx.conf listening on ``port`` (and with another read timeout, for the test of 504)."""
    conf = NGINX_CONF.read_text()
    assert conf.count(f"listen {BALANCER_PORT};") == 1
    conf = conf.replace(f"listen {BALANCER_PORT};", f"listen 127.0.0.1:{port};")
    if read_timeout_s is not None:
        conf, count = re.subn(r"proxy_read_timeout \d+s;", f"proxy_read_timeout {read_timeout_s}s;", conf)
        assert count == 1
    return conf


def write_balancer(folder: Path, port: int, servers: list[str], read_timeout_s: int | None = None) -> list[str]:
    """nginx.conf and its upstream list written into ``folder``; the volumes that mount them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nginx.conf").write_text(balancer_conf(port, read_timeout_s))
    (folder / "upstream.conf").write_text("".join(f"server {server};\n" for server in servers))
    return [f"{folder / 'nginx.conf'}:/etc/nginx/nginx.conf:ro", f"{folder / 'upstream.conf'}:{UPSTREAM_PATH}:ro"]


def scale_profile(folder: Path, balancer_port: int, replica_ports: list[int]) -> dict[str, Any]:
    """The `scale` profile: one `replica-N` service per port, each the project's `replica`, and the
    project's `balancer` in front of them with the upstreams listed by port."""
    services = project_services()
    replicas: dict[str, Any] = {}
    for number, port in enumerate(replica_ports, start=1):
        replica = on_host_network(services["replica"], {**replica_environment(port), "DENOISE_WORKERS": "1"})
        replica["deploy"]["replicas"] = 1
        replicas[f"replica-{number}"] = replica
    balancer = on_host_network(services["balancer"])
    original = services["balancer"]["volumes"]
    assert original == [
        "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro",
        f"./deploy/nginx/upstream.conf:{UPSTREAM_PATH}:ro",
    ]
    servers = [f"127.0.0.1:{port} max_fails=2 fail_timeout=5s" for port in replica_ports]
    balancer["volumes"] = write_balancer(folder, balancer_port, servers)
    balancer["depends_on"] = {name: services["balancer"]["depends_on"]["replica"] for name in replicas}
    probe = balancer["healthcheck"]["test"]
    balancer["healthcheck"]["test"] = [
        part.replace(f"127.0.0.1:{BALANCER_PORT}", f"127.0.0.1:{balancer_port}") for part in probe
    ]
    assert balancer["healthcheck"]["test"] != probe
    return {"services": {**replicas, "balancer": balancer}}
