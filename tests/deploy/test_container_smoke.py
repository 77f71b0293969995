"""Container smoke test without a Docker engine: replay the Dockerfile's `cpu` stage in a fresh venv.

The stage's own COPY, ENV and RUN lines are executed (with /srv and /opt/venv mapped into a
temporary folder), then its CMD is started with its environment and checked over HTTP. Only
`useradd`/`USER` (no root needed here) and the base image itself are not reproduced; the port
is moved to a free one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, decode_png
from tests.server import free_port, wait_ready

pytestmark = pytest.mark.slow


def stage_instructions(stage: str) -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    instructions, inside = [], False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            inside = line.endswith(f" AS {stage}")
            continue
        if inside and line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword, rest.strip()))
    return instructions


def test_cpu_stage_serves_denoise(tmp_path: Path) -> None:
    root, venv = tmp_path / "srv", tmp_path / "venv"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    pip_env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}  # the machine's package index

    def mapped(value: str) -> str:
        return value.replace("/opt/venv", str(venv)).replace("/srv", str(root))

    def expand(value: str) -> str:
        return re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), mapped(value))

    root.mkdir()
    workdir, command = root, None
    for keyword, rest in stage_instructions("cpu"):
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = expand(value)
        elif keyword == "WORKDIR":
            workdir = Path(mapped(rest))
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, target = rest.split()
            for source in sources:
                into_folder = target.endswith("/") or target == "."
                destination = workdir / Path(source).name if into_folder else workdir / target
                if (REPO / source).is_dir():
                    shutil.copytree(REPO / source, destination, ignore=shutil.ignore_patterns("__pycache__", "report"))
                else:
                    shutil.copy2(REPO / source, destination)
        elif keyword == "RUN":
            if "useradd" in rest:
                continue
            python = sys.executable if rest.startswith("python3 -m venv") else None
            script = rest.replace("python3", python, 1) if python else rest
            subprocess.run(expand(script), shell=True, cwd=workdir, env={**env, **pip_env}, check=True)
        elif keyword == "CMD":
            command = [expand(part) for part in json.loads(rest)]
    assert command == ["denoise-serve"]
    port = free_port()
    env["DENOISE_PORT"] = str(port)
    process = subprocess.Popen(command, cwd=workdir, env=env, executable=str(venv / "bin" / command[0]))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, timeout=120)
        sample = (REPO / "tests" / "data" / "noisy-digit.png").read_bytes()
        response = httpx.post(f"{url}/denoise", content=sample, headers={"content-type": "image/png"})
        assert response.status_code == 200
        decode_png(response.content)
        health = subprocess.run([str(venv / "bin" / "python"), "-m", "app.healthcheck"], cwd=workdir, env=env)
        assert health.returncode == 0
        assert not list(venv.glob("lib/python3*/site-packages/tensorflow"))
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
