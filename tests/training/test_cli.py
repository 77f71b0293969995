"""The training command line: defaults from the project, quick bundles kept apart, the README's commands."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from tests.docs import blocks
from tests.server import MODELS, REPO
from tests.training.conftest import write_idx_dataset
from training.__main__ import QUICK_VERSION, RUNS, _config, _parser, main
from training.noise import BlindNoise


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


def test_noise_weights_and_upload_mix_are_taken_as_given() -> None:
    cfg = _config(_parser().parse_args(["train", "--noise-weights", "0.5", "0.2", "0.1", "0.1", "0.1"]))
    assert cfg.noise.weights == (0.5, 0.2, 0.1, 0.1, 0.1)
    assert cfg.noise.ranges() == BlindNoise().ranges()
    assert _config(_parser().parse_args(["train"])).noise == BlindNoise()
    cfg = _config(_parser().parse_args(["train", "--mix", "0.1", "0", "0.05", "0"]))
    assert (cfg.uploads.moved, cfg.uploads.clean, cfg.uploads.faded, cfg.uploads.jpeg) == (0.1, 0, 0.05, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mix", "1.5", "0", "0", "0"], "1.5 is not a share between 0 and 1"),
        (["--mix", "0.5", "0.5", "0.2", "0"], "--mix: the shares add up to more than 1"),
        (["--noise-weights", "0", "0", "0", "0", "-1"], "-1 is not a share between 0 and 1"),
        (["--noise-weights", "0", "0", "0", "0", "0"], "--noise-weights: at least one kind needs a share above 0"),
        (["--noise-weights", "0.5", "0.5"], "--noise-weights: expected 5 arguments"),
    ],
)
def test_bad_shares_stop_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["train", "--quick", *argv])
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "--init-from", "nowhere"],
            "--init-from: nowhere is not a finished run folder (no autoencoder.keras,",
        ),
        (
            ["anomaly", "--scorer-from", "nowhere"],
            "--scorer-from: nowhere is not a finished run folder (no scorer.keras",
        ),
    ],
)
def test_a_run_folder_that_is_not_one_stops_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--quick"]) == 2
    assert message in capsys.readouterr().err


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
