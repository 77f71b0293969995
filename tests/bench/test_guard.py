"""The guard's committed int8 figures: one per CPU model, held to this CPU's, or to the slowest recorded."""

from __future__ import annotations

import json

import pytest

from bench import guard
from tests.server import MODEL

AMD, INTEL = "AMD EPYC", "Intel(R) Xeon(R) Processor"


@pytest.fixture(autouse=True)
def _commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "commit", lambda: "abc1234")


def test_record_adds_this_cpu_and_keeps_the_others_for_the_same_model() -> None:
    first = guard.record({}, "mnist 2.3.2", AMD, 260.54)
    both = guard.record(first, "mnist 2.3.2", INTEL, 180.0)
    assert both == {
        "model": "mnist 2.3.2",
        guard.FIGURES: {AMD: {"us": 260.5, "commit": "abc1234"}, INTEL: {"us": 180.0, "commit": "abc1234"}},
    }
    assert json.loads(json.dumps(both)) == both


def test_a_new_model_version_drops_the_other_cpus_figures() -> None:
    both = guard.record(guard.record({}, "mnist 2.3.2", AMD, 260.0), "mnist 2.3.2", INTEL, 180.0)
    assert guard.record(both, "mnist 2.4.0", INTEL, 170.0)[guard.FIGURES] == {INTEL: {"us": 170.0, "commit": "abc1234"}}


def test_the_figure_of_this_cpu_else_the_slowest_else_the_run_itself() -> None:
    both = guard.record(guard.record({}, "mnist 2.3.2", AMD, 260.0), "mnist 2.3.2", INTEL, 180.0)
    assert guard.committed_figure(both, INTEL, 200.0) == (180.0, f"{INTEL}, abc1234")
    figure, note = guard.committed_figure(both, "Some Other CPU", 200.0)
    assert figure == 260.0
    assert note == f"none on Some Other CPU: the slowest recorded, {AMD}, abc1234"
    assert guard.committed_figure({}, INTEL, 200.0) == (200.0, "none recorded")


def test_the_committed_file_has_a_figure_for_the_shipped_model() -> None:
    recorded = json.loads(guard.RESULTS.read_text())
    assert recorded["model"].startswith(MODEL + " ")
    assert all(figure["us"] > 0 for figure in recorded[guard.FIGURES].values())
