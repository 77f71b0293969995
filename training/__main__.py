"""Command line: ``python -m training {run,train,anomaly,evaluate,export,quantize,gate,rescore,report,uploads,download}
--help``.

Every flag is checked before any work starts; every failure is one line on standard error with an exit
status of its own (:data:`EXIT_CODES`). Nothing under ``models/`` is written by a training command except
through the release gate (``gate --release``); a bundle folder that holds anything is not written over
without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import NoReturn

from training.config import Architecture, TrainConfig
from training.data import DATASETS, PROJECT, DataError, download
from training.noise import NOISE_KINDS, BlindNoise
from training.uploads import UploadMix

QUICK = {"epochs": 2, "limit_train": 400, "limit_test": 200, "scorer_epochs": 1, "stroke_images": 200}
#: The flags ``--quick`` sets itself, and so refuses beside it.
QUICK_FLAGS = {"epochs": "--epochs", "limit_train": "--limit-train", "limit_test": "--limit-test"}
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_REFUSED: "the release gate refused the candidate (its table says which rows fall)",
    EXIT_USAGE: "a bad flag, missing or broken data, a folder that is not a run or a bundle, or an output "
    "that would be replaced",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
QUICK_BM3D_SUBSET = 4
#: Quick bundles can't be mistaken for trained ones: their own name and version, and written
#: under runs/quick/ (servable with DENOISE_MODEL_DIR=runs/quick) unless --out says otherwise.
QUICK_VERSION = "0.0.0-quick"
#: Runs (and quick bundles) go here: ``$DENOISE_RUNS_DIR``, else ``runs/`` in the project folder.
RUNS = Path(os.environ.get("DENOISE_RUNS_DIR") or PROJECT / "runs")
MODELS = PROJECT / "models"


class UsageError(Exception):
    """A command that cannot run as given: one line saying what is wrong and what to do."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is a ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low}")
        return value

    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a learning rate between 0 and 1")
    return value


def _share(text: str) -> float:
    share = float(text)
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return share


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m training",
        description="Train, evaluate and export the blind denoising autoencoder as an ONNX model bundle.",
        epilog="Exit status: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()) + ".",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = OneLineParser(add_help=False)
    common.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist, or any name with --data-dir")
    common.add_argument(
        "--name",
        help="the bundle's name: its folder under models/ and the model name requests give (default: the dataset's)",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        help="directory of the four IDX files (gzipped or not) or a Keras mnist.npz; "
        + "; ".join(f"{k} defaults to ${v.env} or else {v.default_dir}" for k, v in DATASETS.items()),
    )
    common.add_argument(
        "--run-dir", type=Path, help=f"where models, histories and the evaluation go (default {RUNS}/NAME)"
    )
    common.add_argument(
        "--out",
        type=Path,
        help=f"bundle directory to write (default {RUNS}/bundles/NAME; with --quick {RUNS}/quick/NAME-quick)",
    )
    common.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed for weights, shuffling and noise")
    common.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run on a few hundred images for 2 epochs; its bundle is DATASET-quick {QUICK_VERSION}",
    )
    train_opts = OneLineParser(add_help=False)
    train_opts.add_argument(
        "--epochs",
        type=_at_least(1),
        default=argparse.SUPPRESS,
        help=f"maximum epochs (early stopping may end sooner; default {TrainConfig.epochs})",
    )
    train_opts.add_argument(
        "--batch-size", type=_at_least(1), default=TrainConfig.batch_size, help="training batch size"
    )
    train_opts.add_argument(
        "--learning-rate", type=_positive, default=TrainConfig.learning_rate, help="initial Adam learning rate"
    )
    train_opts.add_argument(
        "--widths",
        type=_at_least(1),
        nargs=3,
        default=Architecture().widths,
        metavar=("W28", "W14", "W7"),
        help="channels at 28x28, 14x14 and 7x7",
    )
    train_opts.add_argument(
        "--latent-channels", type=_at_least(1), default=Architecture().latent_channels, help="latent is 7x7xC"
    )
    train_opts.add_argument(
        "--loss",
        choices=["psnr", "mse", "binary_crossentropy"],
        default=TrainConfig.loss,
        help="the autoencoder's loss: psnr (each image's PSNR, averaged) or per-pixel mse or binary cross-entropy",
    )
    train_opts.add_argument(
        "--mix",
        type=_share,
        nargs=4,
        default=(UploadMix.moved, UploadMix.clean, UploadMix.faded, UploadMix.jpeg),
        metavar=("MOVED", "CLEAN", "FADED", "JPEG"),
        help="shares of the training inputs shifted or rotated, clean, faded and JPEG-compressed",
    )
    train_opts.add_argument(
        "--artefacts",
        type=_share,
        default=UploadMix.artefacts,
        metavar="SHARE",
        help="share of the training inputs with scan artefacts (blurs, rescans, lines, dust, lighting, banding, "
        "tone) under light noise; the target is the clean image",
    )
    train_opts.add_argument(
        "--noise-weights",
        type=_share,
        nargs=len(NOISE_KINDS),
        default=BlindNoise.weights,
        metavar=tuple(kind.upper() for kind in NOISE_KINDS),
        help="the blind noise's kinds, their shares among the noisy inputs (normalised to sum to 1)",
    )
    train_opts.add_argument(
        "--init-from", type=Path, help="continue from this run folder's autoencoder (same architecture)"
    )
    train_opts.add_argument("--no-reference", action="store_true", help="skip training the reference network")
    train_opts.add_argument(
        "--resume",
        action="store_true",
        help="keep each network a stopped run of the same settings finished in the run folder (its .keras file "
        "and history); train only the ones missing",
    )
    train_opts.add_argument(
        "--limit-train", type=_at_least(100), default=argparse.SUPPRESS, help="use only the first N training images"
    )
    score_opts = OneLineParser(add_help=False)
    score_opts.add_argument(
        "--outlier-dataset",
        help="the anomaly score's outlier exposure and first out-set (default: fashion-mnist for mnist, else mnist)",
    )
    score_opts.add_argument("--outlier-data-dir", type=Path, help="the outlier dataset's folder (default: as for it)")
    score_opts.add_argument(
        "--scorer-epochs",
        type=_at_least(1),
        default=TrainConfig.scorer_epochs,
        help="epochs of the anomaly score's head",
    )
    score_opts.add_argument(
        "--scorer-from",
        type=Path,
        help="keep this run folder's trained anomaly head (calibrated and measured again) instead of training one",
    )
    eval_opts = OneLineParser(add_help=False)
    eval_opts.add_argument(
        "--limit-test", type=_at_least(1), default=argparse.SUPPRESS, help="evaluate on the first N test images only"
    )
    eval_opts.add_argument(
        "--bm3d-subset", type=_at_least(0), default=200, help="images per condition for slow BM3D (0 skips it)"
    )
    export_opts = OneLineParser(add_help=False)
    export_opts.add_argument(
        "--version",
        help="model version written to the manifest (default: the version of the bundle under models/ it would "
        "replace, its minor number bumped; 1.0.0 for a new one)",
    )
    export_opts.add_argument(
        "--force", action="store_true", help="write over a bundle folder that already holds files (emptied first)"
    )

    sub.add_parser(
        "run", parents=[common, train_opts, score_opts, eval_opts, export_opts], help="train, evaluate and export"
    )
    sub.add_parser("train", parents=[common, train_opts], help="train the autoencoder (and the reference)")
    sub.add_parser(
        "anomaly",
        parents=[common, score_opts, eval_opts],
        help="train, calibrate and evaluate the anomaly score (after train)",
    )
    sub.add_parser("evaluate", parents=[common, eval_opts], help="score every denoiser on the test set")
    sub.add_parser("export", parents=[common, export_opts], help="write the ONNX bundle and its report")
    sub.add_parser(
        "quantize",
        parents=[common],
        help="add an int8 copy of the bundle's autoencoder if its PSNR stays within 0.05 dB on every row",
    )
    redraw = sub.add_parser("report", help="redraw a bundle's figures from its ONNX graphs (no Keras models needed)")
    redraw.add_argument("bundle", type=Path, help="the bundle folder, e.g. models/mnist")
    redraw.add_argument("--data-dir", type=Path, help="the dataset's folder (default: as for run)")
    measure = sub.add_parser(
        "uploads",
        help="score a bundle's autoencoder on images like callers send (clean, shifted, rotated, faded, JPEG) "
        "beside the classical denoisers",
    )
    measure.add_argument("bundle", type=Path, help="the bundle folder, e.g. models/mnist")
    measure.add_argument("--data-dir", type=Path, help="the dataset's folder (default: as for run)")
    measure.add_argument("--limit-test", type=_at_least(1), help="the first N test images only (default: all)")
    measure.add_argument(
        "--bm3d-subset", type=_at_least(0), default=200, help="images per condition for slow BM3D (0 skips it)"
    )
    rescore = sub.add_parser(
        "rescore",
        parents=[score_opts, eval_opts],
        help="a new version of a bundle with its anomaly score trained again and the upload rows measured; "
        "its other graphs unchanged",
    )
    rescore.add_argument("bundle", type=Path, help="the bundle folder, e.g. models/mnist")
    rescore.add_argument("--version", required=True, help="the new version written to the manifest")
    rescore.add_argument("--out", type=Path, help="where the new version goes (default: over the bundle)")
    rescore.add_argument("--data-dir", type=Path, help="the dataset's folder (default: as for run)")
    rescore.add_argument("--run-dir", type=Path, help=f"where the score is trained (default {RUNS}/NAME-rescore)")
    rescore.add_argument("--quick", action="store_true", help="a smoke run on a few hundred images")
    gate = sub.add_parser(
        "gate",
        help="compare a candidate bundle with the releases it would replace on the whole battery; --release "
        "writes it into models/ if it passes",
    )
    gate.add_argument("candidate", type=Path, help="the candidate bundle folder, e.g. runs/bundles/mnist")
    gate.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        help="an earlier release's bundle folder (repeatable; default: models/NAME, the one it would replace)",
    )
    gate.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="'ROW=REASON'",
        help="accept a fall on this row, for this reason (recorded in the manifest and the model card)",
    )
    gate.add_argument(
        "--beside",
        type=Path,
        action="append",
        default=[],
        help="a bundle that serves beside the candidate under its own name (repeatable): a row the candidate lets "
        "fall passes where this one holds it within the tolerance (recorded in the manifest and the model card)",
    )
    gate.add_argument("--release", action="store_true", help="if it passes, write the candidate into models/NAME")
    gate.add_argument("--models-dir", type=Path, default=MODELS, help=f"where the releases live (default {MODELS})")
    gate.add_argument("--data-dir", type=Path, help="the dataset's folder (default: as for run)")
    gate.add_argument("--limit-test", type=_at_least(1), help="the first N test images only (default: all)")
    download = sub.add_parser("download", help="fetch a dataset's IDX files (needs internet)")
    download.add_argument("dataset", choices=sorted(DATASETS))
    download.add_argument("--data-dir", type=Path, required=True)
    return parser


def default_version(name: str) -> str:
    """The version of the bundle under models/ that a new one would replace, its minor number bumped (2.3.0 ->
    2.4.0); 1.0.0 where there is none."""
    try:
        current = json.loads((MODELS / name / "manifest.json").read_text())["version"]
        major, minor = (int(part) for part in str(current).split(".")[:2])
    except (OSError, ValueError, KeyError, TypeError):
        return "1.0.0"
    return f"{major}.{minor + 1}.0"


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def _config(args: argparse.Namespace) -> TrainConfig:
    quick = QUICK if args.quick else {}
    arch = Architecture(
        widths=tuple(getattr(args, "widths", Architecture().widths)),
        latent_channels=getattr(args, "latent_channels", Architecture().latent_channels),
    )
    name = args.name or args.dataset
    name = f"{name}-quick" if args.quick else name
    return TrainConfig(
        dataset=args.dataset,
        name=name,
        data_dir=args.data_dir,
        out_dir=args.out or (RUNS / "quick" / name if args.quick else RUNS / "bundles" / name),
        version=QUICK_VERSION if args.quick else (getattr(args, "version", None) or default_version(name)),
        seed=args.seed,
        epochs=quick.get("epochs", getattr(args, "epochs", TrainConfig.epochs)),
        batch_size=getattr(args, "batch_size", TrainConfig.batch_size),
        learning_rate=getattr(args, "learning_rate", TrainConfig.learning_rate),
        architecture=arch,
        loss=getattr(args, "loss", TrainConfig.loss),
        noise=BlindNoise(weights=tuple(getattr(args, "noise_weights", BlindNoise.weights))),
        uploads=replace(
            UploadMix(*getattr(args, "mix", ())), artefacts=getattr(args, "artefacts", UploadMix.artefacts)
        ),
        init_from=getattr(args, "init_from", None),
        train_reference=not getattr(args, "no_reference", False),
        limit_train=quick.get("limit_train", getattr(args, "limit_train", None)),
        limit_test=quick.get("limit_test", getattr(args, "limit_test", None)),
        scorer_epochs=quick.get("scorer_epochs", getattr(args, "scorer_epochs", TrainConfig.scorer_epochs)),
        scorer_from=getattr(args, "scorer_from", None),
        stroke_images=quick.get("stroke_images", TrainConfig.stroke_images),
        outlier_dataset=getattr(args, "outlier_dataset", None),
        outlier_data_dir=getattr(args, "outlier_data_dir", None),
    )


def _rescore(args: argparse.Namespace) -> Path:
    from training import pipeline

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    quick = QUICK if args.quick else {}
    cfg = TrainConfig(
        dataset=manifest["dataset"],
        name=manifest["name"],
        data_dir=args.data_dir,
        seed=manifest["training"]["seed"],
        limit_train=quick.get("limit_train"),
        limit_test=quick.get("limit_test", getattr(args, "limit_test", None)),
        scorer_epochs=quick.get("scorer_epochs", args.scorer_epochs),
        scorer_from=args.scorer_from,
        stroke_images=quick.get("stroke_images", TrainConfig.stroke_images),
        outlier_dataset=args.outlier_dataset,
        outlier_data_dir=args.outlier_data_dir,
    )
    bm3d_subset = QUICK_BM3D_SUBSET if args.quick else args.bm3d_subset
    run_dir = args.run_dir or RUNS / f"{cfg.name}-rescore"
    with _timed("rescore"):
        return pipeline.rescore_bundle(args.bundle, args.out or args.bundle, args.version, cfg, run_dir, bm3d_subset)


@contextmanager
def _timed(step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    print(f"{step} took {time.perf_counter() - started:.1f} s", flush=True)


#: What each step reads from the run folder (written by the steps before it).
RUN_NEEDS = {
    "anomaly": ("autoencoder.keras",),
    "evaluate": ("autoencoder.keras",),
    "export": ("autoencoder.keras", "config.json", "train_summary.json", "evaluation.json", "scorer.keras"),
}


def _need_files(flag: str, folder: Path, needs: tuple[str, ...], what: str) -> None:
    missing = [name for name in needs if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{flag}{folder} is not {what} (no {', '.join(missing)})")


def _same_architecture(flag: str, bundle: Path, args: argparse.Namespace) -> None:
    """A bundle continued from (``--init-from``) has the architecture asked for, and training to read it."""
    try:
        training = json.loads((bundle / "manifest.json").read_text()).get("training") or {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{flag}: {bundle}/manifest.json cannot be read: {exc}") from None
    if "architecture" not in training or "result" not in training:
        raise UsageError(f"{flag}: {bundle} was not made by this pipeline (its manifest has no training record)")
    if flag == "--init-from":
        wanted = asdict(_config(args).architecture)
        released = {
            key: tuple(value) if isinstance(value, list) else value for key, value in training["architecture"].items()
        }
        if released != wanted:
            raise UsageError(f"--init-from: {bundle} has the architecture {released}; this run asks for {wanted}")


def _check(args: argparse.Namespace) -> None:
    """Every flag and folder checked before any work starts; :class:`UsageError` says what is wrong."""
    if args.command in ("train", "run") and getattr(args, "quick", False):
        given = [f"{flag} {QUICK[key]}" for key, flag in QUICK_FLAGS.items() if hasattr(args, key)]
        if given:
            raise UsageError(f"--quick sets {', '.join(given)} itself; drop --quick to choose them")
    if sum(getattr(args, "mix", ())) > 1:
        raise UsageError("--mix: the shares add up to more than 1")
    if sum(getattr(args, "mix", ())[1:]) + getattr(args, "artefacts", 0) > 1:
        raise UsageError("--mix and --artefacts: the shares of clean, faded, JPEG and artefacts add up to more than 1")
    if not sum(getattr(args, "noise_weights", (1,))):
        raise UsageError("--noise-weights: at least one kind needs a share above 0")
    for flag, folder, needs, graph in (
        (
            "--init-from",
            getattr(args, "init_from", None),
            ("autoencoder.keras", "config.json", "train_summary.json"),
            "autoencoder.onnx",
        ),
        ("--scorer-from", getattr(args, "scorer_from", None), ("scorer.keras", "anomaly.json"), "scorer.onnx"),
    ):
        if folder is not None and (folder / "manifest.json").is_file():
            _need_files(f"{flag}: ", folder, (graph,), "a bundle to continue from")
            _same_architecture(flag, folder, args)
        elif folder is not None:
            _need_files(f"{flag}: ", folder, needs, "a finished run folder or a bundle")
    if getattr(args, "resume", False):
        _same_run(args)
    out = getattr(args, "out", None)
    if args.command == "rescore" and out is None and _inside(args.bundle, MODELS):
        raise UsageError(
            f"rescore writes over {args.bundle} unless --out names another folder: give one outside {MODELS}, then "
            "release it through the gate (python -m training gate FOLDER --release)"
        )
    if args.command in ("run", "export", "rescore") and out is not None and _inside(out, MODELS):
        raise UsageError(
            f"--out {out} is under {MODELS}: bundles go there only through the release gate "
            "(python -m training gate BUNDLE --release)"
        )
    if args.command in (*RUN_NEEDS, "quantize", "run"):
        cfg = _config(args)
        if args.command in RUN_NEEDS:
            run_dir = args.run_dir or RUNS / cfg.name
            _need_files("--run-dir ", run_dir, RUN_NEEDS[args.command], f"a run folder {args.command} can read")
        if args.command == "quantize":
            _need_files(
                "", cfg.out_dir, ("manifest.json",), "an exported bundle (run export first, or name it with --out)"
            )
        holds_files = cfg.out_dir.is_dir() and any(cfg.out_dir.iterdir())
        if args.command in ("run", "export") and holds_files and not args.force:
            raise UsageError(f"{cfg.out_dir} already holds files; add --force to empty it and write the bundle there")
    if args.command in ("report", "uploads", "rescore", "gate"):
        folder = args.candidate if args.command == "gate" else args.bundle
        _need_files("", folder, ("manifest.json",), "a model bundle")


#: Settings that do not change what the networks learn: a resumed run may differ from the stopped one in these.
RESUME_MAY_DIFFER = (
    "name",
    "out_dir",
    "version",
    "limit_test",
    "outlier_dataset",
    "outlier_data_dir",
    "scorer_epochs",
    "scorer_from",
    "stroke_images",
    "train_reference",
)


def _same_run(args: argparse.Namespace) -> None:
    """``--resume`` keeps networks only from a run folder whose training settings are these."""
    cfg = _config(args)
    saved_path = (args.run_dir or RUNS / cfg.name) / "config.json"
    try:
        saved = json.loads(saved_path.read_text())
    except FileNotFoundError:
        return  # nothing to resume: the run starts from the beginning
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume: {saved_path} cannot be read ({exc})") from None
    wanted = json.loads(json.dumps(cfg.to_json()))
    keys = (wanted.keys() | saved.keys()) - set(RESUME_MAY_DIFFER)
    differ = sorted(key for key in keys if wanted.get(key) != saved.get(key))
    if differ:
        raise UsageError(
            f"--resume: the run in {saved_path.parent} was trained with other settings ({', '.join(differ)}); "
            "give the same ones, or another --run-dir"
        )


def _check_output(folder: Path, force: bool) -> None:
    """A bundle folder is written only when empty, or emptied with ``--force`` (so that it holds no file its
    manifest does not name)."""
    if folder.is_dir() and any(folder.iterdir()):
        if not force:
            raise UsageError(f"{folder} already holds files; add --force to empty it and write the bundle there")
        if _inside(folder, MODELS):
            raise UsageError(f"{folder} is under {MODELS}: use the release gate")
        for path in folder.iterdir():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    elif folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file; name a folder for the bundle")


def _gate(args: argparse.Namespace) -> int:
    from training import release
    from training.data import load_dataset, to_float

    name = json.loads((args.candidate / "manifest.json").read_text())["name"]
    target = args.models_dir / name
    against = args.against or ([target] if (target / "manifest.json").is_file() else [])
    manifest = release.check_bundle(args.candidate)
    test = load_dataset(manifest["dataset"], args.data_dir).test
    clean = to_float(test.images[: args.limit_test])[..., 0]
    seed = int(manifest["training"].get("seed", TrainConfig.seed))
    allowed = release.parse_allowed(args.allow)
    return release.run_gate(
        args.candidate, against, allowed, clean, seed, target if args.release else None, beside=args.beside
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _main(args)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: {args.command} stopped; nothing after the last step it logged was written", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _main(args: argparse.Namespace) -> int:
    from training.release import GateError

    try:
        if args.command == "gate":
            return _gate(args)
        if args.command == "download":
            for path in download(args.dataset, args.data_dir):
                print(path)
            return 0
        from training import pipeline  # TensorFlow loads only once arguments are valid and it is needed

        if args.command == "report":
            print(f"figures written to {pipeline.report_from_bundle(args.bundle, args.data_dir)}")
            return 0
        if args.command == "rescore":
            print(f"bundle written to {_rescore(args)}")
            return 0
        if args.command == "uploads":
            print(pipeline.uploads_from_bundle(args.bundle, args.data_dir, args.limit_test, args.bm3d_subset))
            return 0

        cfg = _config(args)
        run_dir = args.run_dir or RUNS / cfg.name
        if args.command in ("run", "export"):
            _check_output(cfg.out_dir, args.force)
        bm3d_subset = QUICK_BM3D_SUBSET if args.quick else getattr(args, "bm3d_subset", 0)
        started = time.perf_counter()
        if args.command in ("run", "train"):
            with _timed("train"):
                pipeline.train(cfg, run_dir, resume=getattr(args, "resume", False))
        if args.command in ("run", "anomaly"):
            with _timed("anomaly"):
                pipeline.anomaly(cfg, run_dir)
        if args.command in ("run", "evaluate"):
            with _timed("evaluate"):
                pipeline.evaluate(cfg, run_dir, bm3d_subset)
        if args.command in ("run", "export"):
            with _timed("export"):
                print(f"bundle {cfg.name} {cfg.version} written to {pipeline.export(cfg, run_dir)}")
        if args.command in ("run", "quantize"):
            with _timed("quantize"):
                shipped = pipeline.quantize(cfg, cfg.out_dir)
                print(f"int8 autoencoder {'added to' if shipped else 'not shipped in'} {cfg.out_dir}")
    except (DataError, GateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.command} finished in {time.perf_counter() - started:.1f} s")
    if args.command == "run" and not args.quick:
        print(f"next: python -m training gate {cfg.out_dir} --release  (writes models/{cfg.name} if it passes)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
