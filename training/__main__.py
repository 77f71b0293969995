"""Command line: ``python -m training {run,train,evaluate,export,download} --help``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from training.config import TrainConfig
from training.data import DATASETS, DataError
from training.model import Architecture

QUICK = {"epochs": 2, "limit_train": 400, "limit_test": 200}
QUICK_BM3D_SUBSET = 4


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
        + "; ".join(f"{k} defaults to {v.default_dir}" for k, v in DATASETS.items()),
    )
    common.add_argument("--run-dir", type=Path, help="where models, histories and the evaluation go (runs/DATASET)")
    common.add_argument("--out", type=Path, help="bundle directory to write (models/DATASET)")
    common.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed for weights, shuffling and noise")
    common.add_argument(
        "--quick", action="store_true", help="a few hundred images and 2 epochs: a smoke run in seconds"
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
    train_opts.add_argument("--no-reference", action="store_true", help="skip training the seeds' reference network")
    train_opts.add_argument("--limit-train", type=int, help="use only the first N training images")
    eval_opts = argparse.ArgumentParser(add_help=False)
    eval_opts.add_argument("--limit-test", type=int, help="evaluate on the first N test images only")
    eval_opts.add_argument(
        "--bm3d-subset", type=int, default=200, help="images per condition for slow BM3D (0 skips it)"
    )
    export_opts = argparse.ArgumentParser(add_help=False)
    export_opts.add_argument("--version", default=TrainConfig.version, help="model version written to the manifest")

    sub.add_parser("run", parents=[common, train_opts, eval_opts, export_opts], help="train, evaluate and export")
    sub.add_parser("train", parents=[common, train_opts], help="train the autoencoder (and the reference)")
    sub.add_parser("evaluate", parents=[common, eval_opts], help="score every denoiser on the test set")
    sub.add_parser("export", parents=[common, export_opts], help="write the ONNX bundle and its report")
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
    return TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        out_dir=args.out or Path("models") / args.dataset,
        version=getattr(args, "version", TrainConfig.version),
        seed=args.seed,
        epochs=quick.get("epochs", getattr(args, "epochs", TrainConfig.epochs)),
        batch_size=getattr(args, "batch_size", TrainConfig.batch_size),
        learning_rate=getattr(args, "learning_rate", TrainConfig.learning_rate),
        architecture=arch,
        train_reference=not getattr(args, "no_reference", False),
        limit_train=quick.get("limit_train", getattr(args, "limit_train", None)),
        limit_test=quick.get("limit_test", getattr(args, "limit_test", None)),
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from training import data, pipeline  # TensorFlow loads only once arguments are valid

    if args.command == "download":
        for path in data.download(args.dataset, args.data_dir):
            print(path)
        return 0
    cfg = _config(args)
    run_dir = args.run_dir or Path("runs") / cfg.dataset
    bm3d_subset = QUICK_BM3D_SUBSET if args.quick else getattr(args, "bm3d_subset", 0)
    started = time.perf_counter()
    try:
        if args.command in ("run", "train"):
            pipeline.train(cfg, run_dir)
        if args.command in ("run", "evaluate"):
            pipeline.evaluate(cfg, run_dir, bm3d_subset)
        if args.command in ("run", "export"):
            print(f"bundle written to {pipeline.export(cfg, run_dir, cfg.out_dir)}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.command} finished in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
