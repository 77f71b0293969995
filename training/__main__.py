"""Command line: ``python -m training {run,train,anomaly,evaluate,export,quantize,report,uploads,download} --help``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from training.config import Architecture, TrainConfig
from training.data import DATASETS, PROJECT, DataError, download
from training.noise import NOISE_KINDS, BlindNoise
from training.uploads import UploadMix

QUICK = {"epochs": 2, "limit_train": 400, "limit_test": 200, "scorer_epochs": 1, "stroke_images": 200}
QUICK_BM3D_SUBSET = 4
#: Quick bundles can't be mistaken for trained ones: their own name and version, and written
#: under runs/quick/ (servable with DENOISE_MODEL_DIR=runs/quick) unless --out says otherwise.
QUICK_VERSION = "0.0.0-quick"
#: Runs (and quick bundles) go here: ``$DENOISE_RUNS_DIR``, else ``runs/`` in the project folder.
RUNS = Path(os.environ.get("DENOISE_RUNS_DIR") or PROJECT / "runs")
MODELS = PROJECT / "models"


def _share(text: str) -> float:
    share = float(text)
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return share


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and export the blind denoising autoencoder as an ONNX model bundle.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist, or any name with --data-dir")
    common.add_argument(
        "--data-dir",
        type=Path,
        help="directory of the four IDX files (gzipped or not) or a Keras mnist.npz; "
        + "; ".join(f"{k} defaults to ${v.env} or else {v.default_dir}" for k, v in DATASETS.items()),
    )
    common.add_argument(
        "--run-dir", type=Path, help=f"where models, histories and the evaluation go (default {RUNS}/DATASET)"
    )
    common.add_argument(
        "--out",
        type=Path,
        help=f"bundle directory to write (default {MODELS}/DATASET; with --quick {RUNS}/quick/DATASET-quick)",
    )
    common.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed for weights, shuffling and noise")
    common.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run on a few hundred images for 2 epochs; its bundle is DATASET-quick {QUICK_VERSION}",
    )
    train_opts = argparse.ArgumentParser(add_help=False)
    train_opts.add_argument(
        "--epochs", type=int, default=TrainConfig.epochs, help="maximum epochs (early stopping may end sooner)"
    )
    train_opts.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="training batch size")
    train_opts.add_argument(
        "--learning-rate", type=float, default=TrainConfig.learning_rate, help="initial Adam learning rate"
    )
    train_opts.add_argument(
        "--widths",
        type=int,
        nargs=3,
        default=Architecture().widths,
        metavar=("W28", "W14", "W7"),
        help="channels at 28x28, 14x14 and 7x7",
    )
    train_opts.add_argument(
        "--latent-channels", type=int, default=Architecture().latent_channels, help="latent is 7x7xC"
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
    train_opts.add_argument("--no-reference", action="store_true", help="skip training the seeds' reference network")
    train_opts.add_argument("--limit-train", type=int, help="use only the first N training images")
    score_opts = argparse.ArgumentParser(add_help=False)
    score_opts.add_argument(
        "--outlier-dataset",
        help="the anomaly score's outlier exposure and first out-set (default: fashion-mnist for mnist, else mnist)",
    )
    score_opts.add_argument("--outlier-data-dir", type=Path, help="the outlier dataset's folder (default: as for it)")
    score_opts.add_argument(
        "--scorer-epochs", type=int, default=TrainConfig.scorer_epochs, help="epochs of the anomaly score's head"
    )
    score_opts.add_argument(
        "--scorer-from",
        type=Path,
        help="keep this run folder's trained anomaly head (calibrated and measured again) instead of training one",
    )
    eval_opts = argparse.ArgumentParser(add_help=False)
    eval_opts.add_argument("--limit-test", type=int, help="evaluate on the first N test images only")
    eval_opts.add_argument(
        "--bm3d-subset", type=int, default=200, help="images per condition for slow BM3D (0 skips it)"
    )
    export_opts = argparse.ArgumentParser(add_help=False)
    export_opts.add_argument("--version", default=TrainConfig.version, help="model version written to the manifest")

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
    measure.add_argument("--limit-test", type=int, help="the first N test images only (default: all)")
    measure.add_argument("--bm3d-subset", type=int, default=200, help="images per condition for slow BM3D (0 skips it)")
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
    download = sub.add_parser("download", help="fetch a dataset's IDX files (needs internet)")
    download.add_argument("dataset", choices=sorted(DATASETS))
    download.add_argument("--data-dir", type=Path, required=True)
    return parser


def _config(args: argparse.Namespace) -> TrainConfig:
    quick = QUICK if args.quick else {}
    arch = Architecture(
        widths=tuple(getattr(args, "widths", Architecture().widths)),
        latent_channels=getattr(args, "latent_channels", Architecture().latent_channels),
    )
    name = f"{args.dataset}-quick" if args.quick else args.dataset
    return TrainConfig(
        dataset=args.dataset,
        name=name,
        data_dir=args.data_dir,
        out_dir=args.out or (RUNS / "quick" / name if args.quick else MODELS / name),
        version=QUICK_VERSION if args.quick else getattr(args, "version", TrainConfig.version),
        seed=args.seed,
        epochs=quick.get("epochs", getattr(args, "epochs", TrainConfig.epochs)),
        batch_size=getattr(args, "batch_size", TrainConfig.batch_size),
        learning_rate=getattr(args, "learning_rate", TrainConfig.learning_rate),
        architecture=arch,
        loss=getattr(args, "loss", TrainConfig.loss),
        noise=BlindNoise(weights=tuple(getattr(args, "noise_weights", BlindNoise.weights))),
        uploads=UploadMix(*getattr(args, "mix", ())),
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
        limit_test=quick.get("limit_test", args.limit_test),
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if sum(getattr(args, "mix", ())) > 1:
        print("error: --mix: the shares add up to more than 1", file=sys.stderr)
        return 2
    if not sum(getattr(args, "noise_weights", (1,))):
        print("error: --noise-weights: at least one kind needs a share above 0", file=sys.stderr)
        return 2
    for flag, folder, needs in (
        ("--init-from", getattr(args, "init_from", None), ("autoencoder.keras", "config.json", "train_summary.json")),
        ("--scorer-from", getattr(args, "scorer_from", None), ("scorer.keras", "anomaly.json")),
    ):
        missing = [name for name in needs if folder is not None and not (folder / name).is_file()]
        if missing:
            print(f"error: {flag}: {folder} is not a finished run folder (no {', '.join(missing)})", file=sys.stderr)
            return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
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
        bm3d_subset = QUICK_BM3D_SUBSET if args.quick else getattr(args, "bm3d_subset", 0)
        started = time.perf_counter()
        if args.command in ("run", "train"):
            with _timed("train"):
                pipeline.train(cfg, run_dir)
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
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.command} finished in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
