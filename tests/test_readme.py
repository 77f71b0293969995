"""The README's command blocks, run as written (the address and port aside) against real servers.

Covered elsewhere: the client blocks (tests/client/test_client.py), the compose and Kubernetes
files the deploy commands use (tests/deploy/), `make test` and `make lint` (CI runs them)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.images import decode_png
from tests.server import REPO, free_port, running_server, stop_tree, wait_ready
from training.data import DATASETS

README = (REPO / "README.md").read_text()


def sh_blocks(section: str | None) -> list[str]:
    """The ```sh blocks of a ``## section`` (None: the first screen, before any section)."""
    body = README.split("\n## ", 1)[0] if section is None else README.split(f"\n## {section}\n", 1)[1]
    body = body.split("\n## ", 1)[0]
    return [part.split("```", 1)[0] for part in body.split("```sh\n")[1:]]


def run_block(block: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + block.replace("http://127.0.0.1:8000", url)
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def test_first_screen_and_api_examples_run_as_written(tmp_path: Path) -> None:
    (tmp_path / "tests").symlink_to(REPO / "tests")
    first_screen = sh_blocks(None)
    assert [line.split()[:2] for line in first_screen[0].splitlines()] == [["make", "serve"], ["make", "test"]]
    with running_server({"DENOISE_MODELS": "", "DENOISE_WORKERS": "1", "DENOISE_LOG_LEVEL": "warning"}) as (url, _):
        for block in [*first_screen[1:], *sh_blocks("API")]:
            result = run_block(block, url, tmp_path)
            assert result.returncode == 0, (block, result.stderr)
            outputs = result.stdout
    decode_png((tmp_path / "denoised.png").read_bytes())
    decode_png((tmp_path / "reconstructed.png").read_bytes())
    assert json.loads((tmp_path / "latent.json").read_text())["latent_shape"] == [7, 7, 8]
    decoder = json.JSONDecoder()
    batch, end = decoder.raw_decode(outputs)  # curl prints the two answers back to back
    models, _ = decoder.raw_decode(outputs, end)
    assert batch["count"] == 2
    assert {model["name"] for model in models["models"]} == {"mnist", "fashion-mnist"}
    boot = decode_png((tmp_path / "boot.png").read_bytes())
    assert boot.shape == (28, 28)
    assert np.median(boot) > 200  # reinverted: a light background again, like the scan


def test_make_serve_as_written() -> None:
    """`make serve`, the first command on the first screen, on a free port (Make's PORT variable)."""
    assert sh_blocks(None)[0].splitlines()[0].startswith("make serve")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DENOISE_MODELS": "mnist", "DENOISE_WORKERS": "1"}
    process = subprocess.Popen(["make", "serve"], cwd=REPO, env=env, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, timeout=300)
        assert httpx.get(f"http://127.0.0.1:{port}/models").json()["default_model"] == "mnist"
    finally:
        stop_tree(process)


def _training_lines() -> list[str]:
    return [line.split("  #")[0].strip() for line in sh_blocks("Training")[0].splitlines() if line.strip()]


def test_training_download_without_internet_fails_in_one_line(tmp_path: Path) -> None:
    line = next(line for line in _training_lines() if " download " in line)
    argv = [sys.executable, *shlex.split(line)[1:]]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300)
    if result.returncode == 0:  # a machine with internet: the files arrived
        assert len(list((tmp_path / "data").glob("*.gz"))) == 4
        return
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "cannot download" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_training_quick_run_as_written_from_another_directory(tmp_path: Path) -> None:
    if not DATASETS["mnist"].location().is_dir() and not os.environ.get("CI"):  # CI has ../shared beside it
        pytest.skip(f"no MNIST files at {DATASETS['mnist'].location()}")
    line = next(line for line in _training_lines() if "--quick" in line)
    argv = [sys.executable, *shlex.split(line)[1:]]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bundle mnist-quick 0.0.0-quick written to" in result.stdout
    for step in ("train took", "evaluate took", "export took", "run finished in"):
        assert step in result.stdout
    manifest = json.loads((REPO / "runs" / "quick" / "mnist-quick" / "manifest.json").read_text())
    assert (manifest["name"], manifest["version"]) == ("mnist-quick", "0.0.0-quick")
