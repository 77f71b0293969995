"""The trade-off over the artefact share: short runs from a release, one table with every battery row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.datasets import need_data
from tests.server import MODELS
from training import battery, tradeoff


@pytest.mark.slow
def test_tradeoff_trains_each_share_and_prints_the_battery_for_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_data("mnist")
    argv = [str(MODELS / "mnist"), "--shares", "0", "0.5", "--epochs", "1", "--limit-train", "300"]
    assert tradeoff.main([*argv, "--limit-test", "40", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("| row |") :].splitlines()
    release = json.loads((MODELS / "mnist" / "manifest.json").read_text())["version"]
    assert table[0].split("|")[2:5] == [f" mnist {release} ", " artefacts 0% ", " artefacts 50% "]
    assert [line.split("|")[1].strip() for line in table[2 : 2 + len(battery.labels())]] == battery.labels()
    assert table[-1].startswith("| **mean, all rows** |")
    assert (tmp_path / "artefacts-0.5" / "autoencoder.keras").is_file()
    run = tmp_path / "artefacts-0.5"
    assert tradeoff.main([str(MODELS / "mnist"), "--runs", str(run), "--limit-test", "40"]) == 0
    scored = capsys.readouterr().out.splitlines()
    assert scored[0].split("|")[2:4] == [f" mnist {release} ", f" {run} "]
    assert len(scored) == 2 + len(battery.labels()) + 3
