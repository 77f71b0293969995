"""A real Docker engine for the container tests: the project's image built as a user builds it,
containers run on the host network, and a load generator that counts every outcome.

The engine and the base images come from ``../shared/tools/docker-local.sh`` (beside the
repository); where that script is absent the container tests are skipped, except under CI, where
they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
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


def start_engine() -> Engine:
    """Start (or reuse) the local engine and base images; skip where the script is absent."""
    if not DOCKER_LOCAL.is_file():
        if os.environ.get("CI"):
            raise AssertionError(f"CI needs a Docker engine: {DOCKER_LOCAL} is missing")
        pytest.skip(f"no Docker engine: {DOCKER_LOCAL} is missing")
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
