"""A real Docker engine for the container tests: the project's image built as a user builds it,
containers run on the host network, and a load generator that counts every outcome.

The engine is the one the user has: ``$DOCKER`` with ``$PYTHON_IMAGE`` and ``$NGINX_IMAGE`` where they
are set (as ``eval "$(docker-local.sh)"`` sets them), else ``docker`` on the PATH (``DOCKER_HOST``
honoured) with the images the Dockerfile and compose file name; only where no engine answers is
``../shared/tools/docker-local.sh`` (beside the repository, where it exists) asked to start one. With
no engine at all the container tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server import REPO

DOCKER_LOCAL = REPO.parent / "shared" / "tools" / "docker-local.sh"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
#: The tag docs/deploy.md's build command gives the image.
IMAGE = "denoise:cpu"


@dataclass(frozen=True)
class Engine:
    """The ``docker`` client and the local base images, as docker-local.sh printed them."""

    env: dict[str, str]

    @property
    def docker(self) -> str:
        return self.env["DOCKER"]

    @property
    def python_image(self) -> str:
        return self.env["PYTHON_IMAGE"]

    @property
    def nginx_image(self) -> str:
        return self.env["NGINX_IMAGE"]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.command([self.docker, *args], timeout=timeout, check=check)

    def command(
        self,
        argv: list[str],
        timeout: float = 120,
        check: bool = True,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, **self.env, **(env or {})}
        result = subprocess.run(
            argv, env=environment, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} exited with {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def inspect(self, container: str, template: str) -> str:
        return self.run("inspect", "--format", template, container).stdout.strip()

    def wait_healthy(self, container: str, timeout: float = 90) -> float:
        """Seconds until Docker reports the container's HEALTHCHECK healthy."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            state = json.loads(self.inspect(container, "{{json .State}}"))
            if not state["Running"]:
                raise AssertionError(f"{container} exited with {state['ExitCode']}: {self.logs(container)[-2000:]}")
            if state["Health"]["Status"] == "healthy":
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"{container} not healthy in {timeout} s: {self.logs(container)[-2000:]}")

    def logs(self, container: str) -> str:
        result = self.run("logs", container, check=False)
        return result.stdout + result.stderr


#: The base images a user's engine pulls: the Dockerfile's and docker-compose.yml's defaults.
DEFAULT_IMAGES = {"PYTHON_IMAGE": "python:3.11-slim", "NGINX_IMAGE": "nginx:1.27-alpine"}


def _answers(docker: str) -> bool:
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def with_base_images(engine: Engine) -> Engine:
    """``engine`` once it holds both base images (pulled where missing); skip (fail under CI) where one is
    missing and cannot be pulled, as on an engine with no registry to reach."""
    for image in (engine.python_image, engine.nginx_image):
        if engine.run("image", "inspect", image, check=False).returncode == 0:
            continue
        pulled = engine.run("pull", image, timeout=600, check=False)
        if pulled.returncode != 0:
            error = pulled.stderr.strip()[-300:]
            reason = f"base image {image} is not on the Docker engine and cannot be pulled: {error}"
            if os.environ.get("CI"):
                raise AssertionError(f"CI needs it: {reason}")
            pytest.skip(f"{reason} (set $PYTHON_IMAGE and $NGINX_IMAGE to local images; docs/deploy.md)")
    return engine


def start_engine() -> Engine:
    """The user's engine if one answers, else the local one docker-local.sh starts; skip where neither is, or
    where the base images are neither on it nor reachable (:func:`with_base_images`)."""
    given = {name: os.environ[name] for name in ("DOCKER", *DEFAULT_IMAGES) if os.environ.get(name)}
    if "DOCKER" in given and _answers(given["DOCKER"]):
        return with_base_images(Engine({**DEFAULT_IMAGES, **given}))
    on_path = shutil.which("docker")
    if on_path is not None and _answers(on_path):
        return with_base_images(Engine({**DEFAULT_IMAGES, **given, "DOCKER": on_path}))
    if not DOCKER_LOCAL.is_file():
        if os.environ.get("CI"):
            raise AssertionError(f"CI needs a Docker engine: none answers and {DOCKER_LOCAL} is missing")
        pytest.skip("no Docker engine answers (`docker info`); docs/deploy.md says how to get one")
    script = subprocess.run(
        ["bash", str(DOCKER_LOCAL)], capture_output=True, text=True, timeout=900, check=False, cwd=REPO
    )
    if script.returncode != 0:
        raise AssertionError(f"docker-local.sh failed:\n{script.stderr[-3000:]}")
    env: dict[str, str] = {}
    for line in script.stdout.splitlines():
        if line.startswith("export "):
            for pair in shlex.split(line.removeprefix("export ")):
                name, _, value = pair.partition("=")
                env[name] = value
    return Engine(env)


def build_command(engine: Engine) -> list[str]:
    """docs/deploy.md's build command as written, with this engine's base image and network."""
    argv = shlex.split(DEPLOY_DOC.read_text().split("```sh\n", 1)[1].split("\n", 1)[0])
    assert argv[:2] == ["docker", "build"]
    assert argv[-1] == "."
    assert f"--tag {IMAGE}" in shlex.join(argv)
    local = ["--network", "host", "--build-arg", f"PYTHON_IMAGE={engine.python_image}"]
    return [engine.docker, *argv[1:-1], *local, "."]


def build_image(engine: Engine) -> float:
    """Build the image as docs/deploy.md says; seconds it took."""
    start = time.monotonic()
    engine.command(build_command(engine), timeout=900, cwd=REPO)
    return time.monotonic() - start


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def container(engine: Engine, *options: str, name: str | None = None) -> Iterator[str]:
    """``docker run -d`` the image on the host network with ``options``; removed after."""
    name = name or unique("denoise-test")
    engine.run("run", "--detach", "--name", name, "--network", "host", *options, IMAGE)
    try:
        yield name
    finally:
        engine.run("rm", "--force", name, check=False)


@dataclass(frozen=True)
class Compose:
    """A docker-compose project (the ``docker-compose`` command) from a file the test wrote."""

    engine: Engine
    file: Path
    project: str
    env: dict[str, str]
    profiles: tuple[str, ...] = ()

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = ["docker-compose", "--project-name", self.project, "--file", str(self.file)]
        argv += [option for profile in self.profiles for option in ("--profile", profile)]
        argv += args
        return self.engine.command(argv, timeout=timeout, cwd=self.file.parent, env=self.env)

    def container(self, service: str) -> str:
        return self("ps", "--quiet", service).stdout.strip()


@contextlib.contextmanager
def compose_project(
    engine: Engine, folder: Path, definition: dict[str, object], env: dict[str, str], profiles: tuple[str, ...] = ()
) -> Iterator[Compose]:
    """Write ``definition`` as a compose file in ``folder``; yield the project; ``down`` it after."""
    file = folder / "docker-compose.yml"
    file.write_text(json.dumps(definition, indent=2))  # JSON is YAML
    project = Compose(engine, file, unique("denoise-test"), env, profiles)
    try:
        yield project
    finally:
        project("down", "--timeout", "60", timeout=240)
