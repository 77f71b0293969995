"""The training command line: defaults from the project, quick bundles kept apart, the README's commands."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from tests.docs import blocks
from tests.server import MODELS, REPO
from tests.training.conftest import write_idx_dataset
from training.__main__ import QUICK_VERSION, RUNS, _config, _parser


def test_quick_bundles_are_named_apart_and_kept_out_of_models() -> None:
    cfg = _config(_parser().parse_args(["run", "--quick"]))
    assert (cfg.name, cfg.version) == ("mnist-quick", QUICK_VERSION)
    assert cfg.out_dir == RUNS / "quick" / "mnist-quick"
    assert MODELS not in cfg.out_dir.parents
    full = _config(_parser().parse_args(["run", "--dataset", "fashion-mnist"]))
    assert (full.name, full.out_dir) == ("fashion-mnist", MODELS / "fashion-mnist")


def test_defaults_do_not_depend_on_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _config(_parser().parse_args(["run"]))
    assert cfg.out_dir == REPO / "models" / "mnist"


def readme_training_commands() -> list[list[str]]:
    lines = [line for block in blocks("training/README.md") for line in block.splitlines()]
    return [shlex.split(line.split("  #")[0]) for line in lines if line.strip()]


def test_readme_training_commands_are_valid() -> None:
    """Every command in training/README.md's blocks parses; the quick one and the offline download
    are run as written by the tests below and by tests/test_docs.py."""
    commands = readme_training_commands()
    assert commands
    for argv in commands:
        assert argv[:3] in (["python", "-m", "training"], [".venv/bin/python", "-m", "training"]), argv
        _parser().parse_args(argv[3:])


@pytest.mark.slow
def test_report_redraws_figures_from_a_bundle(tmp_path: Path) -> None:
    from training.pipeline import report_from_bundle

    bundle = tmp_path / "mnist"
    shutil.copytree(MODELS / "mnist", bundle, ignore=shutil.ignore_patterns("report"))
    data = write_idx_dataset(tmp_path / "data", n_train=50, n_test=40)
    figures = report_from_bundle(bundle, data)
    assert (figures / "denoising.png").stat().st_size > 1000
    assert (figures / "latents.png").stat().st_size > 1000
