"""The release gate: a candidate bundle against the releases it would replace, on the whole battery.

``python -m training gate CANDIDATE`` scores the candidate's autoencoder (float32, and its int8 copy
where it ships one) and each earlier release's (``--against``, by default the bundle under ``models/``
that it would replace) on every row of :mod:`training.battery`, with ONNX Runtime on CPU, on the same
test images. A row fails when the candidate falls more than :data:`TOLERANCE_DB` below the best earlier
release on it, precision by precision (a candidate without an int8 copy is compared by the float32 graph
it would serve). A candidate released under a name of its own, to serve beside the bundles it was compared
with, may fall on a row that one of those (``--beside``) holds within the tolerance: a caller with those
uploads keeps a bundle that is no worse than before, and the gate names it. Unless every other failing row
is named with ``--allow 'ROW=REASON'``, the gate refuses: it
prints the table, exits :data:`REFUSED`, and writes nothing. With ``--release`` a candidate that passes
is written into ``models/<name>`` (the only way a training command writes there), its manifest and model
card recording the battery, the releases it was compared with and any exception with its reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from denoise_bundle import GRAPH_FILES, INT8_AUTOENCODER_FILE, BundleError, load_manifest, verify_checksums
from training import battery
from training.evaluate import mean_psnr
from training.quantize import onnx_denoiser

log = logging.getLogger(__name__)

#: How far below the best earlier release a row may fall (dB of mean PSNR).
TOLERANCE_DB = 0.1
#: The gate's exit status when it refuses.
REFUSED = 1
PRECISIONS = ("float32", "int8")


class GateError(Exception):
    """The gate cannot run (a folder that is not a bundle, bundles of different datasets): one line."""


@dataclass
class Scores:
    """A bundle's mean PSNR on every battery row, by precision (``int8`` only where it ships one)."""

    name: str
    version: str
    dataset: str
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.name} {self.version}"

    def value(self, row: str, precision: str) -> float:
        """The figure the service would give on this row: int8 falls back to float32 where none ships."""
        scores = self.rows[row]
        return scores.get(precision, scores["float32"])


def check_bundle(folder: Path) -> dict[str, Any]:
    """The bundle's manifest, its graphs checked against it; :class:`GateError` if it is not a bundle."""
    try:
        manifest = load_manifest(folder)
        verify_checksums(folder, manifest)
    except BundleError as exc:
        raise GateError(f"{folder} is not a usable model bundle: {exc}") from None
    return manifest.model_dump(mode="json")


def score(folder: Path, pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> Scores:
    manifest = check_bundle(folder)
    graphs = {"float32": onnx_denoiser(folder / GRAPH_FILES["autoencoder"])}
    if manifest.get("int8") and (folder / INT8_AUTOENCODER_FILE).is_file():
        graphs["int8"] = onnx_denoiser(folder / INT8_AUTOENCODER_FILE)
    scores = Scores(manifest["name"], manifest["version"], manifest["dataset"])
    for label, target, sent in pairs:
        scores.rows[label] = {precision: mean_psnr(target, run(sent)) for precision, run in graphs.items()}
        log.info("%s: %s", scores.title, label)
    return scores


@dataclass
class Verdict:
    """One row and precision: the candidate, the best earlier release, and whether it passes."""

    row: str
    precision: str
    candidate: float
    best: float
    best_of: str
    allowed: str | None = None
    #: The bundle serving beside the candidate that holds this row where the candidate falls.
    held_by: str | None = None

    @property
    def change(self) -> float:
        return self.candidate - self.best

    @property
    def passes(self) -> bool:
        return not self.falls_by_itself or self.allowed is not None or self.held_by is not None

    @property
    def falls_by_itself(self) -> bool:
        return self.change < -TOLERANCE_DB

    @property
    def said(self) -> str:
        if not self.falls_by_itself:
            return "pass"
        if self.held_by is not None:
            return f"held by {self.held_by}"
        return f"allowed: {self.allowed}" if self.allowed else "FAIL"


def judge(
    candidate: Scores, earlier: list[Scores], allowed: dict[str, str], beside: list[Scores] | None = None
) -> list[Verdict]:
    """A verdict per row and precision; ``allowed`` names rows (with why) that may fall, ``beside`` the bundles
    that serve beside the candidate and hold a row it lets fall."""
    unknown = sorted(set(allowed) - set(candidate.rows))
    if unknown:
        raise GateError(f"--allow names rows the battery does not have: {', '.join(unknown)}")
    verdicts = []
    for row in candidate.rows:
        for precision in PRECISIONS if earlier else ():
            best = max(earlier, key=lambda scores: scores.value(row, precision))
            verdict = Verdict(row, precision, candidate.value(row, precision), best.value(row, precision), best.title)
            if verdict.falls_by_itself:
                holding = [s for s in beside or () if s.value(row, precision) - verdict.best >= -TOLERANCE_DB]
                verdict.held_by = max(holding, key=lambda s: s.value(row, precision)).title if holding else None
                verdict.allowed = allowed.get(row) if verdict.held_by is None else None
            verdicts.append(verdict)
    return verdicts


def markdown(candidate: Scores, earlier: list[Scores], verdicts: list[Verdict]) -> str:
    """The gate's table: every row, float32 and int8, the candidate beside each earlier release."""
    titles = [scores.title for scores in earlier]
    header = ["row", "precision", candidate.title, *titles, "change vs best", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for verdict in verdicts:
        figures = [f"{scores.value(verdict.row, verdict.precision):.2f}" for scores in earlier]
        lines.append(
            "| "
            + " | ".join(
                [
                    verdict.row,
                    verdict.precision,
                    f"{verdict.candidate:.2f}",
                    *figures,
                    f"{verdict.change:+.2f}",
                    verdict.said,
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def record(
    candidate: Scores, earlier: list[Scores], verdicts: list[Verdict], images: int, beside: list[Scores] | None = None
) -> dict[str, Any]:
    """What the manifest keeps of the gate (``evaluation.release_gate``)."""
    return {
        "tolerance_db": TOLERANCE_DB,
        "test_images": images,
        "battery": candidate.rows,
        "against": {scores.title: scores.rows for scores in earlier},
        "exceptions": {v.row: v.allowed for v in verdicts if v.allowed is not None},
        "beside": [scores.title for scores in beside or ()],
        "held": {v.row: v.held_by for v in verdicts if v.held_by is not None},
    }


def install(candidate: Path, target: Path, gate: dict[str, Any]) -> Path:
    """Write ``candidate`` with the gate's record into ``target``, replacing the folder there at once (a copy
    beside it renamed into place), so that a service scanning the folder sees the old version or the new one."""
    from training.export import write_manifest  # the manifest and the card, written together

    manifest = load_manifest(candidate)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        shutil.copytree(candidate, staging, dirs_exist_ok=True)
        write_manifest(
            staging, manifest.model_copy(update={"evaluation": {**manifest.evaluation, "release_gate": gate}})
        )
        os.chmod(staging, 0o755)  # noqa: S103 - mkdtemp's 0o700 would hide the bundle from the service's user
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def run_gate(
    candidate: Path,
    against: list[Path],
    allowed: dict[str, str],
    clean: np.ndarray,
    seed: int,
    release_to: Path | None,
    out: Callable[[str], None] = print,
    beside: list[Path] | None = None,
) -> int:
    """Score, judge and print; with ``release_to``, install a candidate that passes. The exit status."""
    if not against and release_to is None:
        raise GateError("nothing to compare with: name the releases it replaces with --against")
    manifest = check_bundle(candidate)
    for flag, folders in (("--against", against), ("--beside", beside or [])):
        for folder in folders:
            other = check_bundle(folder)
            if other["dataset"] != manifest["dataset"]:
                raise GateError(
                    f"{flag} {folder} is a {other['dataset']} model; the candidate is a {manifest['dataset']} one"
                )
            if folder.resolve() == candidate.resolve():
                raise GateError(f"{flag} {folder} is the candidate itself")
            if flag == "--beside" and other["name"] == manifest["name"]:
                raise GateError(
                    f"--beside {folder} is {other['name']}, the name the candidate replaces: "
                    "it would not serve beside it"
                )
    pairs = battery.pairs(clean, seed)
    scored = score(candidate, pairs)
    cache: dict[Path, Scores] = {}

    def scores_of(folder: Path) -> Scores:
        if folder.resolve() not in cache:
            cache[folder.resolve()] = score(folder, pairs)
        return cache[folder.resolve()]

    earlier = [scores_of(folder) for folder in against]
    serving = [scores_of(folder) for folder in beside or []]
    verdicts = judge(scored, earlier, allowed, serving)
    out(
        f"{len(clean)} test images of {manifest['dataset']}, seed {seed}; a row fails below the best by more than "
        f"{TOLERANCE_DB} dB\n"
    )
    out(markdown(scored, earlier, verdicts))
    failing = [v for v in verdicts if not v.passes]
    if failing:
        rows = sorted({v.row for v in failing})
        out(
            f"refused: {len(rows)} row(s) fall: {'; '.join(rows)} (name one with --allow 'ROW=REASON' to accept it, "
            "or --beside a bundle serving beside the candidate that holds it)"
        )
        return REFUSED
    out("passed")
    if release_to is not None:
        gate = record(scored, earlier, verdicts, len(clean), serving)
        out(f"released to {install(candidate, release_to, gate)}")
    return 0


def parse_allowed(items: list[str]) -> dict[str, str]:
    allowed = {}
    for item in items:
        row, sep, reason = item.partition("=")
        if not sep or not row.strip() or not reason.strip():
            raise GateError(f"--allow {item!r}: write it as 'ROW=REASON', the row as the table names it")
        allowed[row.strip()] = reason.strip()
    return allowed
