"""The training command line: defaults from the project, quick bundles kept apart, the README's commands."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.docs import blocks
from tests.server import MODELS, REPO
from tests.training.conftest import write_idx_dataset
from training import tradeoff
from training.__main__ import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    QUICK_VERSION,
    RUNS,
    _check,
    _config,
    _parser,
    default_version,
    main,
)
from training.data import DataError, check_images
from training.noise import BlindNoise


def test_quick_bundles_are_named_apart_and_kept_out_of_models() -> None:
    cfg = _config(_parser().parse_args(["run", "--quick"]))
    assert (cfg.name, cfg.version) == ("mnist-quick", QUICK_VERSION)
    assert cfg.out_dir == RUNS / "quick" / "mnist-quick"
    assert MODELS not in cfg.out_dir.parents
    full = _config(_parser().parse_args(["run", "--dataset", "fashion-mnist"]))
    assert (full.name, full.out_dir) == ("fashion-mnist", RUNS / "bundles" / "fashion-mnist")  # models/: the gate


def test_a_bundle_may_have_a_name_of_its_own() -> None:
    cfg = _config(_parser().parse_args(["run", "--dataset", "mnist", "--name", "mnist-scans"]))
    assert (cfg.dataset, cfg.name) == ("mnist", "mnist-scans")
    assert cfg.out_dir == RUNS / "bundles" / "mnist-scans"
    assert cfg.version == default_version("mnist-scans")
    assert _config(_parser().parse_args(["run", "--name", "mnist-scans", "--quick"])).name == "mnist-scans-quick"


def test_resume_keeps_only_a_run_of_the_same_training_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _config(_parser().parse_args(["train", "--learning-rate", "0.0002", "--artefacts", "0.2"])).save(
        run / "config.json"
    )
    other = ["train", "--run-dir", str(run), "--resume", "--learning-rate", "0.001", "--artefacts", "0.3"]
    assert main(other) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--resume: the run in {run} was trained with other settings (learning_rate, uploads)" in err
    same = _parser().parse_args(
        ["train", "--run-dir", str(run), "--resume", "--learning-rate", "0.0002", "--artefacts", "0.2"]
    )
    _check(same)  # the same settings: accepted
    renamed = _parser().parse_args(
        ["train", "--run-dir", str(run), "--resume", "--learning-rate", "0.0002", "--artefacts", "0.2", "--name", "x"]
    )
    _check(renamed)  # the bundle's name and version do not change what the networks learn
    (run / "config.json").write_text("{not json")
    assert main(["train", "--run-dir", str(run), "--resume"]) == EXIT_USAGE
    assert "cannot be read" in capsys.readouterr().err


def test_defaults_do_not_depend_on_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _config(_parser().parse_args(["run"]))
    assert cfg.out_dir == RUNS / "bundles" / "mnist"
    assert RUNS.is_absolute()


def test_artefacts_share_is_taken_as_given_beside_the_mix() -> None:
    cfg = _config(_parser().parse_args(["train", "--mix", "0.1", "0.1", "0", "0", "--artefacts", "0.3"]))
    assert (cfg.uploads.moved, cfg.uploads.clean, cfg.uploads.artefacts) == (0.1, 0.1, 0.3)
    assert _config(_parser().parse_args(["train"])).uploads.artefacts == 0.0


def test_a_bundle_to_continue_from_must_have_the_architecture_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--init-from", str(MODELS / "mnist"), "--widths", "8", "16", "32"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--init-from" in err
    assert "has the architecture" in err
    assert "Traceback" not in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"name": "x"}')
    (foreign / "autoencoder.onnx").write_bytes(b"")
    assert main(["train", "--init-from", str(foreign)]) == EXIT_USAGE
    assert "was not made by this pipeline" in capsys.readouterr().err
    assert main(["train", "--init-from", str(tmp_path)]) == EXIT_USAGE
    assert "is not a finished run folder or a bundle" in capsys.readouterr().err


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
        (["--artefacts", "1.2"], "1.2 is not a share between 0 and 1"),
        (["--mix", "0", "0.5", "0.1", "0.1", "--artefacts", "0.4"], "the shares of clean, faded, JPEG and artefacts"),
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
            "--init-from: nowhere is not a finished run folder or a bundle (no autoencoder.keras,",
        ),
        (
            ["anomaly", "--scorer-from", "nowhere"],
            "--scorer-from: nowhere is not a finished run folder or a bundle (no scorer.keras",
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
        if argv[2] == "training.tradeoff":
            tradeoff.parser().parse_args(argv[3:])
            continue
        if argv[2] == "training.model_choice":
            assert argv[3:] == []  # it takes no arguments; tests/test_docs.py checks the page it writes
            continue
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


def _training(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``python -m training ...`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "training", *argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _one_line(result: subprocess.CompletedProcess[str], says: str, status: int = 2) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("usage:")]
    assert len(lines) == 1, result.stderr
    assert says in lines[0], lines[0]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "--epochs", "-3"], "--epochs: -3 is below 1"),
        (["train", "--epochs", "0"], "--epochs: 0 is below 1"),
        (["train", "--batch-size", "0"], "--batch-size: 0 is below 1"),
        (["train", "--widths", "0", "0", "0"], "--widths: 0 is below 1"),
        (["train", "--learning-rate", "-1"], "--learning-rate: -1 is not a learning rate between 0 and 1"),
        (["train", "--limit-train", "0"], "--limit-train: 0 is below 100"),
        (["train", "--quick", "--epochs", "5"], "--quick sets --epochs 2 itself; drop --quick to choose them"),
        (["run", "--quick", "--limit-test", "50"], "--quick sets --limit-test 200 itself"),
        (["evaluate", "--run-dir", "/nonexistent/run"], "--run-dir /nonexistent/run is not a run folder"),
        (["export", "--run-dir", "/nonexistent/run"], "is not a run folder export can read"),
        (["quantize", "--out", "/nonexistent/bundle"], "is not an exported bundle"),
        (["report", "/tmp"], "/tmp is not a model bundle (no manifest.json)"),
        (["uploads", "/tmp"], "/tmp is not a model bundle"),
        (["gate", "/tmp"], "/tmp is not a model bundle"),
        (["export", "--out", "models/mnist"], "bundles go there only through the release gate"),
        (["run", "--out", "models/somewhere"], "only through the release gate"),
        (["rescore", "models/mnist", "--version", "9.9.9"], "rescore writes over"),
    ],
)
def test_bad_commands_stop_before_any_work_with_one_line(argv: list[str], says: str) -> None:
    _one_line(_training(*argv), says)


def test_an_export_never_writes_over_a_folder_that_holds_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("autoencoder.keras", "config.json", "train_summary.json", "evaluation.json", "scorer.keras"):
        (run / name).write_text("{}")
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    _one_line(_training("export", "--run-dir", str(run), "--out", str(out)), "already holds files; add --force")
    assert (out / "mine.txt").read_text() == "keep"


def test_the_version_is_the_replaced_bundles_bumped_never_a_stale_default() -> None:
    shipped = json.loads((MODELS / "mnist" / "manifest.json").read_text())["version"]
    major, minor = (int(part) for part in shipped.split(".")[:2])
    assert _config(_parser().parse_args(["export"])).version == f"{major}.{minor + 1}.0"
    assert _config(_parser().parse_args(["export", "--version", "7.0.0"])).version == "7.0.0"
    assert default_version("no-such-bundle") == "1.0.0"


@pytest.mark.parametrize(
    ("pixels", "refused", "warned"),
    [
        (np.zeros((50, 28, 28), dtype=np.uint8), "every pixel of the 50 images is 0", None),
        (np.full((50, 28, 28), 255, dtype=np.uint8), "every pixel of the 50 images is 255", None),
        (np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8), None, "dark background"),
        (255 - np.pad(np.full((50, 10, 10), 255, np.uint8), ((0, 0), (9, 9), (9, 9))), None, "dark background"),
    ],
)
def test_degenerate_training_images_are_refused_or_warned_with_figures(
    pixels: np.ndarray, refused: str | None, warned: str | None
) -> None:
    if refused:
        with pytest.raises(DataError, match=refused):
            check_images(pixels, "these")
    else:
        (warning,) = check_images(pixels, "these")
        assert warned is not None
        assert warned in warning
        assert "%" in warning


def test_mnist_like_images_pass_without_a_warning() -> None:
    digits = np.zeros((50, 28, 28), dtype=np.uint8)
    digits[:, 8:20, 12:16] = 250
    assert check_images(digits, "digits") == []


def test_exit_codes_are_in_help_and_readme() -> None:
    helped = _training("--help").stdout
    readme = (REPO / "training" / "README.md").read_text()
    for status in (EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_INTERRUPTED):
        assert f"{status} " in helped
        assert f"| {status} |" in readme
