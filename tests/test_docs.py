"""The documentation's command blocks, run as written (the address and port aside) against real
servers, and the generated pages checked against their sources.

Covered elsewhere: the client blocks (tests/client/test_client.py), the image build and the compose
and Kubernetes files the deploy page uses (tests/deploy/), the training commands' parsing
(tests/training/test_cli.py), `make test` and `make lint` (CI runs them)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.datasets import need_data
from tests.docs import blocks, first_screen, read
from tests.images import decode_png
from tests.server import BUNDLES, REPO, free_port, running_server, stop_tree, wait_ready


def run_block(block: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + block.replace("http://127.0.0.1:8000", url)
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def test_first_screen_and_api_examples_run_as_written(tmp_path: Path) -> None:
    (tmp_path / "tests").symlink_to(REPO / "tests")
    screen = first_screen()
    assert [line.split()[:2] for line in screen[0].splitlines()] == [["make", "serve"], ["make", "test"]]
    with running_server({"DENOISE_MODELS": "", "DENOISE_WORKERS": "1", "DENOISE_LOG_LEVEL": "warning"}) as (url, _):
        for block in [*screen[1:], *blocks("docs/api.md")]:
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
    assert sorted(model["name"] for model in models["models"]) == BUNDLES
    boot = decode_png((tmp_path / "boot.png").read_bytes())
    assert boot.shape == (28, 28)
    assert np.median(boot) > 200  # reinverted: a light background again, like the scan


def test_make_serve_as_written() -> None:
    """`make serve`, the first command on the first screen, on a free port (Make's PORT variable)."""
    assert first_screen()[0].splitlines()[0].startswith("make serve")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DENOISE_MODELS": "mnist", "DENOISE_WORKERS": "1"}
    process = subprocess.Popen(["make", "serve"], cwd=REPO, env=env, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, timeout=300)
        assert httpx.get(f"http://127.0.0.1:{port}/models").json()["default_model"] == "mnist"
    finally:
        stop_tree(process)


def _training_lines() -> list[str]:
    return [line.split("  #")[0].strip() for line in blocks("training/README.md")[0].splitlines() if line.strip()]


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
    need_data("mnist", "fashion-mnist")  # the anomaly score's outlier exposure reads the other dataset
    line = next(line for line in _training_lines() if "--quick" in line)
    argv = [sys.executable, *shlex.split(line)[1:]]
    runs = tmp_path / "runs"  # not the repository's runs/ folder
    env = {**os.environ, "DENOISE_RUNS_DIR": str(runs)}
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bundle mnist-quick 0.0.0-quick written to" in result.stdout
    for step in ("train took", "evaluate took", "export took", "run finished in"):
        assert step in result.stdout
    manifest = json.loads((runs / "quick" / "mnist-quick" / "manifest.json").read_text())
    assert (runs / "quick" / "mnist-quick" / "README.md").is_file()  # the model card
    assert (manifest["name"], manifest["version"]) == ("mnist-quick", "0.0.0-quick")


def test_v2_examples_run_as_written(tmp_path: Path) -> None:
    (tmp_path / "tests").symlink_to(REPO / "tests")
    grpc_port = free_port()
    env = {
        "DENOISE_MODELS": "",
        "DENOISE_WORKERS": "1",
        "DENOISE_LOG_LEVEL": "warning",
        "DENOISE_ADMIN_API_KEYS": "my-admin-key",
    }
    http_example, grpc_example, repository_example = blocks("docs/v2.md", "python")
    outputs = []
    # The repository example runs with ordinary keys set too, as a service that has admin keys would.
    for keys, examples in (
        ({}, (http_example, grpc_example)),
        ({"DENOISE_API_KEYS": "my-api-key"}, (repository_example,)),
    ):
        with running_server({**env, **keys, "DENOISE_GRPC_PORT": str(grpc_port)}) as (url, _):
            for block in examples:
                code = block.replace("127.0.0.1:8000", url.removeprefix("http://")).replace(
                    "127.0.0.1:8001", f"127.0.0.1:{grpc_port}"
                )
                result = subprocess.run(
                    [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60
                )
                assert result.returncode == 0, result.stderr
                outputs.append(result.stdout)
    assert outputs[0].splitlines()[0] == "True"
    assert "(2, 7, 7, 8)" in outputs[0]
    assert outputs[1].splitlines()[0] == "True latent"
    assert all("anomaly score" in output for output in outputs[:2])
    assert outputs[2].splitlines() == [
        "[('fashion-mnist', 'UNAVAILABLE', 'unloaded through the repository API')]",
        "True",
    ]
    decode_png((tmp_path / "v2-denoised.png").read_bytes())


def test_triton_repository_command_as_written(tmp_path: Path) -> None:
    """docs/v2.md's command writes configurations that parse as Triton's ModelConfig."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    command = read("docs/v2.md").split("`python -m app.v2.triton_repository ", 1)[1].split("`", 1)[0]
    argv = shlex.split(command.replace("\n", " "))
    (tmp_path / "models").symlink_to(REPO / "models")
    result = subprocess.run(
        [sys.executable, "-m", "app.v2.triton_repository", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    repository = tmp_path / "triton-models"
    folders = sorted(p.name for p in repository.iterdir())
    named = [Path(arg).name for arg in argv if arg.startswith("models/")]
    assert named
    assert folders == sorted(f"{b}-{g}" for b in named for g in ("autoencoder", "encoder", "decoder", "scorer"))
    for name in folders:
        config = text_format.Parse((repository / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.name == name
        assert config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 256
        assert config.HasField("dynamic_batching")
        assert (repository / name / "1" / "model.onnx").stat().st_size > 1000
    encoder = text_format.Parse(
        (repository / "mnist-encoder" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert [(t.name, list(t.dims)) for t in encoder.output] == [("latent", [7, 7, 8])]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_model_cards_are_rendered_from_the_manifests(bundle: str) -> None:
    """Each model card is what its manifest renders: the tables and figures are the manifest's, not typed."""
    from training.model_card import render

    manifest = json.loads((REPO / "models" / bundle / "manifest.json").read_text())
    assert read(f"models/{bundle}/README.md") == render(manifest)


def test_models_page_tables_are_rendered_from_the_manifests() -> None:
    """docs/models.md's battery tables are what the committed manifests render, a column per bundle."""
    from training.model_choice import manifests, render

    page = read("docs/models.md")
    assert page == render(page, manifests(REPO / "models"))
    for bundle in BUNDLES:
        assert f"`{bundle}` " in page


def test_settings_reference_is_the_code() -> None:
    """docs/configuration.md's table is what app/config.py's Settings render (python -m app.settings_reference)."""
    from app.config import Settings
    from app.settings_reference import render, table

    page = read("docs/configuration.md")
    assert page == render(page)
    for name in Settings.model_fields:
        assert f"`DENOISE_{name.upper()}`" in table()


def test_readme_is_a_first_screen_with_working_links() -> None:
    readme = read("README.md")
    assert len(readme.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target


@pytest.mark.parametrize("page", sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
def test_doc_links_resolve(page: str) -> None:
    folder = (REPO / page).parent
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", read(page)):
        if not target.startswith("http"):
            assert (folder / target).exists(), (page, target)
