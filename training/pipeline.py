"""The steps of the pipeline, each reading and writing a run directory.

``runs/<dataset>/`` holds the trained Keras models, their histories and the
evaluation; ``export`` turns it into the bundle under ``models/<dataset>/``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from denoise_bundle import GRAPH_FILES, AnomalySpec, load_manifest
from training import anomaly as scoring
from training import from_bundle, outliers, report, uploads
from training import quantize as int8
from training.config import TrainConfig
from training.data import Dataset, check_images, class_names, load_dataset, to_float
from training.evaluate import Denoiser, bce_at, denoising_table, latent_probes, verdict
from training.export import export_bundle, export_graph, write_manifest, write_samples
from training.model import Autoencoder, build_autoencoder, build_reference
from training.noise import BlindNoise
from training.train import TrainResult, finished, fit, split_validation

log = logging.getLogger(__name__)

OURS = "autoencoder"
REFERENCE = "reference"
PROBE_TRAIN_IMAGES = 10_000
#: Test images per class shipped with a bundle for people to try (the demo page).
SAMPLES_PER_CLASS = 3
#: Photographs, and empty or noise-only images, the anomaly score is judged on.
OUT_SET_IMAGES = 3000


def load_data(cfg: TrainConfig, *, outliers: bool = False) -> Dataset:
    """The configured dataset (or the anomaly score's outlier dataset), cut to the configured limits."""
    if outliers:
        dataset = load_dataset(cfg.other_dataset, cfg.outlier_data_dir)
    else:
        dataset = load_dataset(cfg.dataset, cfg.data_dir)
    train, test = dataset.train, dataset.test
    if cfg.limit_train is not None:
        train = replace(train, images=train.images[: cfg.limit_train], labels=train.labels[: cfg.limit_train])
    if cfg.limit_test is not None:
        test = replace(test, images=test.images[: cfg.limit_test], labels=test.labels[: cfg.limit_test])
    return replace(dataset, train=train, test=test)


def train(cfg: TrainConfig, run_dir: Path, *, resume: bool = False) -> None:
    """Train the autoencoder (and the reference network) into ``run_dir``; with ``resume``, a network a stopped
    run of the same settings finished there is kept, not trained again."""
    data = load_data(cfg)
    for warning in check_images(data.train.images, f"{cfg.dataset} training images"):
        log.warning("%s", warning)
    train_clean, val_clean = split_validation(to_float(data.train.images), cfg.validation_fraction, cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    keras.utils.set_random_seed(cfg.seed)
    models = build_autoencoder(cfg.architecture)
    earlier = 0
    summary: dict[str, Any] = {}
    if cfg.init_from is not None and is_bundle(cfg.init_from):
        manifest = json.loads((cfg.init_from / "manifest.json").read_text())
        calibration, _ = cfg.uploads.apply(
            train_clean[:CALIBRATION_IMAGES], np.random.default_rng([cfg.seed, 20_000]), cfg.noise
        )
        models = from_bundle.autoencoder(cfg.init_from, cfg.architecture, calibration)
        released = manifest["training"]
        before = {OURS: {"epochs_run": released["result"][OURS]}, "init_from": released.get("continued_from")}
        earlier = epochs_total(before)
        summary["init_from"] = {  # the released bundle and the whole chain of runs before it, latest first
            "run": str(cfg.init_from),
            "bundle": f"{manifest['name']} {manifest['version']}",
            "config": {
                key: value for key, value in released.items() if key not in ("continued_from", "history", "result")
            },
            **before,
        }
    elif cfg.init_from is not None:
        models.autoencoder.set_weights(
            keras.models.load_model(cfg.init_from / f"{OURS}.keras", compile=False).get_weights()
        )
        before = json.loads((cfg.init_from / "train_summary.json").read_text())
        earlier = epochs_total(before)
        summary["init_from"] = {  # the whole chain of earlier runs, latest first
            "run": str(cfg.init_from),
            "config": json.loads((cfg.init_from / "config.json").read_text()),
            OURS: before[OURS],
            "init_from": before.get("init_from"),
        }
    result = _fit_unless_finished(models.autoencoder, OURS, train_clean, val_clean, cfg, run_dir, resume)
    summary[OURS] = result.__dict__
    if cfg.train_reference:
        keras.utils.set_random_seed(cfg.seed)
        reference = build_reference()
        ref_cfg = replace(  # the same data and number of epochs in all, the example's loss and learning rate
            cfg,
            epochs=earlier + result.epochs_run,
            loss=cfg.reference_loss,
            learning_rate=cfg.reference_learning_rate,
        )
        ref_result = _fit_unless_finished(reference, REFERENCE, train_clean, val_clean, ref_cfg, run_dir, resume)
        summary[REFERENCE] = ref_result.__dict__
    summary["epochs_total"] = earlier + result.epochs_run
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _fit_unless_finished(
    model: keras.Model,
    name: str,
    train_clean: np.ndarray,
    val_clean: np.ndarray,
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
) -> TrainResult:
    kept = finished(name, run_dir) if resume else None
    if kept is not None:
        log.info("%s: kept the network this run folder finished (%d epochs)", name, kept.epochs_run)
        return kept
    result = fit(model, train_clean, val_clean, cfg, run_dir)
    model.save(run_dir / f"{name}.keras")
    return result


def is_bundle(folder: Path) -> bool:
    """A released bundle (its manifest and graphs) rather than a run folder."""
    return (folder / "manifest.json").is_file()


def epochs_total(summary: dict[str, Any]) -> int:
    """The autoencoder's epochs in a run and in every run it continued from."""
    if "epochs_total" in summary:
        return int(summary["epochs_total"])
    earlier = summary.get("init_from")
    return int(summary[OURS]["epochs_run"]) + (epochs_total(earlier) if earlier else 0)


SCORER = "scorer"
#: Training images (as training corrupts them) that a released bundle's graphs are checked and unfolded on.
CALIBRATION_IMAGES = 2048


def _limit_count(count: int, limit: int | None) -> int:
    return count if limit is None else min(count, limit)


def anomaly(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Train the anomaly score's head, calibrate its threshold, and measure it against the other methods (those
    on the run's autoencoder)."""
    models, _ = load_models(run_dir)
    return train_anomaly_score(cfg, run_dir, as_denoiser(models.autoencoder), as_encoder(models.encoder))


def train_anomaly_score(
    cfg: TrainConfig, run_dir: Path, denoise: Denoiser, encode: Callable[[np.ndarray], np.ndarray]
) -> dict[str, Any]:
    """The anomaly score's head trained and calibrated into ``run_dir``, measured beside the methods on ``denoise``
    and ``encode`` (float32 (n, 28, 28) images in; denoised images, latents out)."""
    data, other = load_data(cfg), load_data(cfg, outliers=True)
    train_clean, val_clean = split_validation(to_float(data.train.images), cfg.validation_fraction, cfg.seed)
    trained_fonts, held_out_fonts = outliers.split_fonts(outliers.fonts())
    scorer, history = _scorer_head(cfg, data, other, train_clean, trained_fonts)
    scorer.save(run_dir / f"{SCORER}.keras")
    out_sets = _out_sets(cfg, data, other, trained_fonts, held_out_fonts)
    evaluation, scores = scoring.evaluate_methods(
        _anomaly_methods(scorer, denoise, encode, data),
        calibration=np.concatenate(list(scoring.in_distribution(val_clean[..., 0], cfg.seed + 100).values())),
        typical=scoring.in_distribution(to_float(data.test.images)[..., 0], cfg.seed),
        out_sets={
            name: scoring.pooled_noise(to_float(images)[..., 0], cfg.seed + i)
            for i, (name, images) in enumerate(out_sets.items(), start=1)
        },
        shipped=scoring.METHOD,
    )
    result = _anomaly_record(cfg, evaluation, history, trained_fonts, held_out_fonts, len(data.test.images), out_sets)
    (run_dir / "anomaly.json").write_text(json.dumps(result, indent=2) + "\n")
    np.savez_compressed(run_dir / "anomaly_scores.npz", allow_pickle=False, **scores[scoring.METHOD])
    for name, method in evaluation["methods"].items():
        print(
            f"anomaly {name}: false flags {method['false_flags']:.3f}, "
            + ", ".join(f"{out} AUROC {r['auroc']:.3f}" for out, r in method["against"].items())
        )
    return result


def _scorer_head(
    cfg: TrainConfig, data: Dataset, other: Dataset, train_clean: np.ndarray, trained_fonts: list[Path]
) -> tuple[keras.Model, dict[str, Any]]:
    """The head and its training history: another run's (``--scorer-from``: it reads the image only, so it
    serves this autoencoder too), or trained here with outlier exposure."""
    if cfg.scorer_from is not None and is_bundle(cfg.scorer_from):
        released = json.loads((cfg.scorer_from / "manifest.json").read_text())
        return from_bundle.scorer(cfg.scorer_from, train_clean[:CALIBRATION_IMAGES]), released["anomaly"]["details"][
            "history"
        ]
    if cfg.scorer_from is not None:
        scorer = keras.models.load_model(cfg.scorer_from / f"{SCORER}.keras", compile=False)
        return scorer, json.loads((cfg.scorer_from / "anomaly.json").read_text())["details"]["history"]
    exposure = np.concatenate(
        [
            to_float(other.train.images),
            to_float(outliers.inverted(data.train.images)),
            to_float(outliers.strokes(cfg.stroke_images, cfg.seed)),
            to_float(outliers.glyphs(seed=cfg.seed + 1)),
            to_float(outliers.letters(trained_fonts, seed=cfg.seed + 2)),
        ]
    )
    keras.utils.set_random_seed(cfg.seed)
    scorer = scoring.build_scorer()
    history = scoring.fit_scorer(
        scorer,
        scoring.ScorerData(train_clean, exposure),
        cfg.noise,
        scoring.SCORER_UPLOADS,
        epochs=cfg.scorer_epochs,
        seed=cfg.seed,
    )
    return scorer, history


def _out_sets(
    cfg: TrainConfig, data: Dataset, other: Dataset, trained_fonts: list[Path], held_out_fonts: list[Path]
) -> dict[str, np.ndarray]:
    """What the score is judged on, none of it trained on: the other dataset's test split, letters, inverted
    digits, photographs, empty and noise-only images (uint8 (n, 28, 28), each set apart)."""
    letter_sets = {
        "letters, fonts held out": outliers.letters(held_out_fonts, seed=cfg.seed, varied=True),
        "letters, trained fonts redrawn": outliers.letters(trained_fonts, seed=cfg.seed + 3, varied=True),
    }
    if cfg.limit_test is not None:
        letter_sets = {
            name: images[np.random.default_rng(cfg.seed).permutation(len(images))[: cfg.limit_test]]
            for name, images in letter_sets.items()
        }
    return {
        cfg.other_dataset: other.test.images,
        **{name: images for name, images in letter_sets.items() if len(images)},  # a machine may lack a style
        "inverted": outliers.inverted(data.test.images),
        "photographs": outliers.photographs(_limit_count(OUT_SET_IMAGES, cfg.limit_test), cfg.seed + 4),
        "empty or noise-only": outliers.blanks(_limit_count(OUT_SET_IMAGES, cfg.limit_test), cfg.seed + 5),
    }


def _anomaly_methods(
    scorer: keras.Model, denoise: Denoiser, encode: Callable[[np.ndarray], np.ndarray], data: Dataset
) -> dict[str, scoring.Scorer]:
    """The shipped head beside the two methods that need no training of their own."""
    probe = data.train.images[:PROBE_TRAIN_IMAGES]
    return {
        scoring.METHOD: lambda images: scorer.predict(images[..., np.newaxis], batch_size=1000, verbose=0)[:, 0],
        "reconstruction error": scoring.reconstruction_error(denoise),
        "latent mahalanobis": scoring.latent_mahalanobis(
            encode, to_float(probe)[..., 0], data.train.labels[:PROBE_TRAIN_IMAGES]
        ),
    }


def _anomaly_record(
    cfg: TrainConfig,
    evaluation: dict[str, Any],
    history: dict[str, Any],
    trained_fonts: list[Path],
    held_out_fonts: list[Path],
    typical_images: int,
    out_sets: dict[str, np.ndarray],
) -> dict[str, Any]:
    """``anomaly.json``: the shipped method's threshold and figures, and what it was trained and judged on."""
    shipped = evaluation["methods"][scoring.METHOD]
    return {
        "method": scoring.METHOD,
        "threshold": shipped["threshold"],
        "calibration_quantile": scoring.CALIBRATION_QUANTILE,
        "false_flags": shipped["false_flags"],
        "against": shipped["against"],
        "details": {
            "pooled_noise": [f"{kind} {level:g}" for kind, level in scoring.POOLED_CONDITIONS],
            "outlier_exposure": [
                f"{cfg.other_dataset} (training split)",
                f"{cfg.dataset} inverted (training split)",
                f"{cfg.stroke_images} random pen strokes",
                f"typographic symbols and non-Latin Greek letters ({len(outliers.GLYPHS)}, every font)",
                f"letters in {len(trained_fonts)} fonts (sans-serif faces), MNIST's size and centring",
            ],
            "never_trained_on": [
                f"letters in {len(held_out_fonts)} fonts held out ({', '.join(outliers.HELD_OUT_STYLES)} faces)",
                "letters at other sizes, pen weights and positions",
                f"{cfg.other_dataset} test split",
                f"{cfg.dataset} test split",
                f"photographs: crops of {len(outliers.PHOTOGRAPHS)} of scikit-image's pictures and its LFW subset",
                "empty images (black, flat grey) and noise-only images",
            ],
            "false_flags_by_kind": shipped["false_flags_by_kind"],
            "uploads": asdict(scoring.SCORER_UPLOADS),
            "test_images": {"typical": typical_images, **{k: len(v) for k, v in out_sets.items()}},
            "methods": evaluation["methods"],
            "history": history,
            **({"scorer_from": str(cfg.scorer_from)} if cfg.scorer_from is not None else {}),
        },
    }


def load_models(run_dir: Path) -> tuple[Autoencoder, keras.Model | None]:
    autoencoder = keras.models.load_model(run_dir / f"{OURS}.keras", compile=False)
    models = Autoencoder(
        autoencoder=autoencoder, encoder=autoencoder.get_layer("encoder"), decoder=autoencoder.get_layer("decoder")
    )
    ref_path = run_dir / f"{REFERENCE}.keras"
    reference = keras.models.load_model(ref_path, compile=False) if ref_path.exists() else None
    return models, reference


def as_encoder(encoder: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: np.asarray(encoder.predict(images[..., np.newaxis], batch_size=1000, verbose=0))


def as_denoiser(model: keras.Model) -> Denoiser:
    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(images[..., np.newaxis], batch_size=500, verbose=0))[..., 0]

    return run


def evaluate(cfg: TrainConfig, run_dir: Path, bm3d_subset: int) -> dict[str, Any]:
    data = load_data(cfg)
    models, reference = load_models(run_dir)
    networks = {OURS: as_denoiser(models.autoencoder)}
    if reference is not None:
        networks[REFERENCE] = as_denoiser(reference)
    clean = to_float(data.test.images)[..., 0]
    table = denoising_table(clean, networks, seed=cfg.seed, bm3d_subset=bm3d_subset)
    upload_rows = uploads.uploads_table(clean, networks, seed=cfg.seed, bm3d_subset=bm3d_subset)
    probe_images = data.train.images[:PROBE_TRAIN_IMAGES]
    encode = models.encoder.predict
    latents = {
        "latent": (encode(to_float(probe_images), verbose=0), encode(to_float(data.test.images), verbose=0)),
        "pixels (baseline)": (probe_images.astype(np.float32) / 255, data.test.images.astype(np.float32) / 255),
    }
    evaluation = {
        "test_images": len(clean),
        "metric_notes": "mean per-image PSNR (dB, capped at 100) / SSIM on the test set; "
        "classical denoisers tuned blind from each image's estimated noise",
        "denoising": table,
        "uploads": upload_rows,
        "bce_gaussian_0.5": bce_at(clean, networks, cfg.seed),
        "latent_probes": {
            name: latent_probes(tr, data.train.labels[:PROBE_TRAIN_IMAGES], te, data.test.labels, cfg.seed)
            for name, (tr, te) in latents.items()
        },
        "verdict": verdict(table, OURS, REFERENCE if reference is not None else None),
    }
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    (run_dir / "evaluation.md").write_text(
        report.markdown_table(table) + "\n" + uploads.markdown(upload_rows, list(networks))
    )
    return evaluation


def export(cfg: TrainConfig, run_dir: Path) -> Path:
    out_dir = cfg.out_dir
    data = load_data(cfg)
    models, _ = load_models(run_dir)
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    summary = json.loads((run_dir / "train_summary.json").read_text())
    trained = {name: summary[name] for name in (OURS, REFERENCE) if name in summary}
    config = json.loads((run_dir / "config.json").read_text())
    noise = BlindNoise(**{kind: tuple(value) for kind, value in config["noise"].items()})
    sample = to_float(data.test.images[:64])
    scorer = keras.models.load_model(run_dir / f"{SCORER}.keras", compile=False)
    anomaly_result = json.loads((run_dir / "anomaly.json").read_text())
    export_bundle(
        models,
        scorer,
        out_dir,
        anomaly=AnomalySpec.model_validate(anomaly_result),
        name=cfg.name,
        version=cfg.version,
        dataset=cfg.dataset,
        description=f"Blind convolutional denoising autoencoder for {cfg.dataset} (28x28, light on dark)",
        parity_sample=sample,
        extra={
            "noise": {  # as trained
                "blind": True,
                "ranges": noise.ranges(),
                "weights": list(noise.weights),
                "uploads": config.get("uploads"),
            },
            "training": {  # as trained (train's own options, e.g. --epochs), versioned as exported
                **config,
                "version": cfg.version,
                "result": {k: v["epochs_run"] for k, v in trained.items()},
                "history": {k: v["history"] for k, v in trained.items()},
                "continued_from": summary.get("init_from"),
            },
            "evaluation": evaluation,
        },
    )
    write_report(
        replace(cfg, loss=config["loss"], reference_loss=config["reference_loss"]),
        out_dir,
        as_denoiser(models.autoencoder),
        as_encoder(models.encoder),
        data,
        {name: result["history"] for name, result in trained.items()},
    )
    _write_evaluation_report(out_dir, run_dir, (run_dir / "evaluation.md").read_text(), anomaly_result)
    return out_dir


def _write_evaluation_report(out_dir: Path, run_dir: Path, tables: str, anomaly_result: dict[str, Any]) -> None:
    """``report/evaluation.md`` (the denoising ``tables``, then the anomaly score's) and ``report/anomaly.png``."""
    (out_dir / "report").mkdir(parents=True, exist_ok=True)
    (out_dir / "report" / "evaluation.md").write_text(tables + "\n" + report.anomaly_table(anomaly_result))
    with np.load(run_dir / "anomaly_scores.npz") as scores:
        report.score_distributions(
            dict(scores), anomaly_result["threshold"], anomaly_result["against"], out_dir / "report" / "anomaly.png"
        )


def rescore_bundle(
    bundle: Path, out_dir: Path, version: str, cfg: TrainConfig, run_dir: Path, bm3d_subset: int
) -> Path:
    """A new ``version`` of ``bundle`` in ``out_dir`` whose anomaly score is trained, calibrated and measured again
    (as :func:`anomaly` does, beside the methods on the bundle's own graphs), and whose evaluation gains the
    upload rows; its autoencoder, encoder, decoder and int8 graphs are copied unchanged. ``cfg`` gives the
    dataset, seeds and the anomaly score's settings."""
    manifest = load_manifest(bundle)
    encode = _onnx_graph(bundle / GRAPH_FILES["encoder"])
    denoise = _images_out(_onnx_graph(bundle / GRAPH_FILES["autoencoder"]))
    run_dir.mkdir(parents=True, exist_ok=True)
    anomaly_result = train_anomaly_score(cfg, run_dir, denoise, encode)
    anomaly_result["details"]["graphs_from"] = f"{manifest.name} {manifest.version}"
    if out_dir.resolve() != bundle.resolve():
        shutil.copytree(bundle, out_dir, dirs_exist_ok=True)
    test = load_data(cfg).test
    clean = to_float(test.images)[..., 0]
    scorer = keras.models.load_model(run_dir / f"{SCORER}.keras", compile=False)
    spec, diff = export_graph(scorer, "scorer", out_dir, to_float(test.images[:64]))
    upload_rows = uploads.uploads_table(clean, {OURS: denoise}, seed=cfg.seed, bm3d_subset=bm3d_subset)
    evaluation = {
        **manifest.evaluation,
        "uploads": upload_rows,
        "onnx_parity_max_abs_diff": {**manifest.evaluation.get("onnx_parity_max_abs_diff", {}), "scorer": diff},
    }
    write_manifest(
        out_dir,
        manifest.model_copy(
            update={
                "version": version,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "graphs": {**manifest.graphs, "scorer": spec},
                "anomaly": AnomalySpec.model_validate(anomaly_result),
                "evaluation": evaluation,
                "training": {**manifest.training, "version": version},
            }
        ),
    )
    tables = report.markdown_table(evaluation["denoising"]) + "\n" + uploads.markdown(upload_rows, [OURS])
    _write_evaluation_report(out_dir, run_dir, tables, anomaly_result)
    return out_dir


def quantize(cfg: TrainConfig, bundle: Path) -> bool:
    """Add an int8 copy of the exported bundle's autoencoder if it keeps the PSNR (see :mod:`training.quantize`)."""
    data = load_data(cfg)
    train_clean, _ = split_validation(to_float(data.train.images), cfg.validation_fraction, cfg.seed)
    manifest = load_manifest(bundle)
    spec = int8.quantize_bundle(bundle, manifest, train_clean[..., 0], to_float(data.test.images)[..., 0], cfg.seed)
    write_manifest(bundle, manifest.model_copy(update={"int8": spec}))
    table = bundle / "report" / "int8.md"
    if spec is None:
        table.unlink(missing_ok=True)
    else:
        table.parent.mkdir(exist_ok=True)
        table.write_text(
            f"Mean PSNR (dB) of `{spec.graph.file}` against the float32 autoencoder on every evaluation row "
            f"(all test images); shipped because every change is within {spec.gate_db} dB.\n\n"
            + report.int8_table(spec.model_dump())
        )
    return spec is not None


def write_report(
    cfg: TrainConfig,
    out_dir: Path,
    denoise: Denoiser,
    encode: Callable[[np.ndarray], np.ndarray],
    data: Dataset,
    histories: dict[str, dict[str, list[float]]],
) -> None:
    """The figures beside a bundle, and its sample images; ``denoise`` and ``encode`` take float32
    (n, 28, 28) batches."""
    figures = out_dir / "report"
    figures.mkdir(parents=True, exist_ok=True)
    write_samples(out_dir, data.test.images, data.test.labels, class_names(cfg.dataset), SAMPLES_PER_CLASS)
    if histories:
        losses = {OURS: cfg.loss, REFERENCE: cfg.reference_loss}
        report.loss_curves(histories, losses, figures / "loss.png")
    clean = to_float(data.test.images)[..., 0]
    report.denoising_grid(clean, denoise, cfg.seed, figures / "denoising.png")
    names = class_names(cfg.dataset)
    report.latent_projection(encode(clean), data.test.labels, names, figures / "latents.png", cfg.seed)


def _onnx_graph(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A bundle's graph as a function of (n, 28, 28) float32 images, run by ONNX Runtime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: images[..., np.newaxis].astype(np.float32)})[0])

    return run


def _images_out(graph: Callable[[np.ndarray], np.ndarray]) -> Denoiser:
    """A graph whose outputs are (n, 28, 28, 1) images as a denoiser of (n, 28, 28) images."""
    return lambda images: graph(images)[..., 0]


def _bundle_config(bundle: Path, data_dir: Path | None) -> tuple[dict[str, Any], TrainConfig]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    cfg = TrainConfig(dataset=manifest["dataset"], name=manifest["name"], seed=manifest["training"]["seed"])
    return manifest, replace(cfg, data_dir=data_dir)


def report_from_bundle(bundle: Path, data_dir: Path | None) -> Path:
    """Redraw a bundle's figures (and sample images) from its ONNX graphs and manifest (the loss curves only where the
    manifest records the training history), with ONNX Runtime: no Keras models needed."""
    manifest, cfg = _bundle_config(bundle, data_dir)
    data = load_data(cfg)
    write_report(
        cfg,
        bundle,
        _images_out(_onnx_graph(bundle / "autoencoder.onnx")),
        _onnx_graph(bundle / "encoder.onnx"),
        data,
        manifest["training"].get("history", {}),
    )
    return bundle / "report"


def uploads_from_bundle(bundle: Path, data_dir: Path | None, limit_test: int | None, bm3d_subset: int) -> str:
    """Score a bundle's autoencoder (float32, and its int8 copy where it ships one) on the upload conditions
    (:mod:`training.uploads`), beside the classical denoisers; the table as markdown."""
    manifest, cfg = _bundle_config(bundle, data_dir)
    clean = to_float(load_data(cfg).test.images[:limit_test])[..., 0]
    networks: dict[str, Denoiser] = {}
    for label, file in (("float32", "autoencoder.onnx"), ("int8", "autoencoder.int8.onnx")):
        if (bundle / file).is_file():
            networks[f"{manifest['name']} {manifest['version']} {label}"] = _images_out(_onnx_graph(bundle / file))
    table = uploads.uploads_table(clean, networks, seed=cfg.seed, bm3d_subset=bm3d_subset)
    return f"{len(clean)} test images of {cfg.dataset}, seed {cfg.seed}\n\n" + uploads.markdown(table, list(networks))
