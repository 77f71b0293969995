"""The trade-off over the training mix: the same short continuation of a release at several shares of scan
artefacts, each scored on the release battery, in one run.

    python -m training.tradeoff models/mnist --shares 0 0.1 0.22 0.35 --limit-train 12000 --epochs 2
    python -m training.tradeoff models/mnist --against OLDER_BUNDLE --runs runs/mnist   # score finished runs

Each share trains ``--epochs`` epochs on the first ``--limit-train`` training images from the release
(``--init-from``, the mix and learning rate as given), with no reference network, into ``--work``; then every
run and the release itself are scored on the battery's rows over the first ``--limit-test`` test images, and
one Markdown table is printed: a row per battery row, a column per share, and the means over the noise rows
(the evaluation's and the uploads'), over the other rows, and over all. Short runs on part of the data say
which way a share pulls and how far, not what a full run reaches.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np

from training import battery
from training.__main__ import main as training_main
from training.data import load_dataset
from training.evaluate import CONDITIONS, mean_psnr
from training.quantize import onnx_denoiser
from training.uploads import UPLOADS


def _release(bundle: Path) -> tuple[str, object]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return f"{manifest['name']} {manifest['version']}", onnx_denoiser(bundle / "autoencoder.onnx")


def _run(folder: Path) -> object:
    model = keras.models.load_model(folder / "autoencoder.keras", compile=False)
    return lambda x: model.predict(x[..., None], batch_size=500, verbose=0)[..., 0]


def table(releases: list[Path], runs: dict[str, Path], limit_test: int, seed: int) -> str:
    """The battery for each release's autoencoder and each run's (float32), a column each."""
    dataset = json.loads((releases[0] / "manifest.json").read_text())["dataset"]
    clean = load_dataset(dataset, None).test.images[:limit_test].astype(np.float32) / 255
    columns = dict(_release(bundle) for bundle in releases) | {name: _run(folder) for name, folder in runs.items()}
    noise_rows = {c.label for c in CONDITIONS} | {u.label for u in UPLOADS}
    figures: dict[str, list[float]] = {}
    for label, target, sent in battery.pairs(clean, seed):
        figures[label] = [mean_psnr(target, run(sent)) for run in columns.values()]  # type: ignore[operator]
    names = list(columns)
    lines = ["| row | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |" for label, values in figures.items()]
    for title, chosen in (
        ("mean, noise rows", [k for k in figures if k in noise_rows]),
        ("mean, other rows", [k for k in figures if k not in noise_rows]),
        ("mean, all rows", list(figures)),
    ):
        means = np.mean([figures[k] for k in chosen], axis=0)
        lines.append(f"| **{title}** | " + " | ".join(f"**{v:.2f}**" for v in means) + " |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.tradeoff", description=__doc__.split("\n\n")[0])
    parser.add_argument("release", type=Path, help="the bundle every run continues from and is compared with")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.22, 0.35])
    parser.add_argument(
        "--mix", nargs=4, default=["0.08", "0.1", "0.03", "0.03"], metavar=("MOVED", "CLEAN", "FADED", "JPEG")
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", default="2e-4")
    parser.add_argument("--limit-train", type=int, default=12000)
    parser.add_argument("--limit-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work", type=Path, default=Path("runs/tradeoff"))
    parser.add_argument(
        "--against", type=Path, action="append", default=[], help="another release to show beside (repeatable)"
    )
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        help="score these finished run folders beside the release instead of training (no --shares)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    releases = [*args.against, args.release]
    if args.runs:
        print(table(releases, {str(run): run for run in args.runs}, args.limit_test, args.seed))
        return 0
    manifest = json.loads((args.release / "manifest.json").read_text())
    for share in args.shares:
        code = training_main(
            [
                "train",
                "--dataset",
                manifest["dataset"],
                "--init-from",
                str(args.release),
                "--run-dir",
                str(args.work / f"artefacts-{share:g}"),
                "--epochs",
                str(args.epochs),
                "--limit-train",
                str(args.limit_train),
                "--learning-rate",
                args.learning_rate,
                "--mix",
                *args.mix,
                "--artefacts",
                str(share),
                "--seed",
                str(args.seed),
                "--no-reference",
            ]
        )
        if code:
            return code
    runs = {f"artefacts {share:.0%}": args.work / f"artefacts-{share:g}" for share in args.shares}
    print(table(releases, runs, args.limit_test, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
