"""Model shapes and bottleneck, ONNX export parity, and the quick end-to-end pipeline (TensorFlow: slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("tensorflow")

import keras
import onnxruntime as ort

from denoise_bundle import INT8_AUTOENCODER_FILE, AnomalySpec, Manifest, load_manifest, verify_checksums
from tests.training.conftest import write_idx_dataset
from training.__main__ import main
from training.anomaly import build_scorer
from training.evaluate import CONDITIONS
from training.export import export_bundle, write_manifest
from training.model import MAX_LATENT_SIZE, Architecture, build_autoencoder, build_reference
from training.outliers import fonts, split_fonts
from training.quantize import GATE_DB, quantize_bundle
from training.uploads import UPLOADS

pytestmark = pytest.mark.slow

TINY = Architecture(widths=(4, 4, 4), latent_channels=2)


def test_default_model_has_a_real_bottleneck() -> None:
    models = build_autoencoder(Architecture())
    assert models.encoder.output_shape == (None, 7, 7, 8)
    assert int(np.prod(models.encoder.output_shape[1:])) <= MAX_LATENT_SIZE
    assert models.autoencoder.output_shape == (None, 28, 28, 1)
    assert models.decoder.input_shape == (None, 7, 7, 8)


def test_autoencoder_is_exactly_decoder_of_encoder() -> None:
    """No skip connection bypasses the latent."""
    models = build_autoencoder(TINY)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    composed = models.decoder(models.encoder(x, training=False), training=False)
    assert np.allclose(models.autoencoder(x, training=False), composed, atol=1e-6)


def test_latent_larger_than_half_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="bottleneck"):
        build_autoencoder(Architecture(latent_channels=9))


def test_reference_network_shapes() -> None:
    assert build_reference().output_shape == (None, 28, 28, 1)


ANOMALY = AnomalySpec(method="learned head", threshold=1.5, calibration_quantile=0.98, false_flags=0.02, against={})


def _export_tiny(out: Path) -> Manifest:
    """A tiny untrained bundle. Its output would be 0.5 give or take 1e-4, too flat to tell an int8 graph's
    output from float32's, so the last convolution's kernel is scaled up a hundredfold."""
    keras.utils.set_random_seed(0)
    models = build_autoencoder(TINY)
    last = models.decoder.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 100.0, bias])
    return export_bundle(
        models,
        build_scorer((4, 4, 4)),
        out,
        anomaly=ANOMALY,
        name="tiny",
        version="0.0.1",
        dataset="synthetic",
        description="",
        parity_sample=np.random.default_rng(1).random((5, 28, 28, 1), dtype=np.float32),
        extra={},
    )


def test_export_parity_and_manifest(tmp_path: Path) -> None:
    manifest = _export_tiny(tmp_path)
    assert load_manifest(tmp_path) == manifest
    verify_checksums(tmp_path, manifest)
    assert manifest.latent_shape == (7, 7, 2)
    for graph, diff in manifest.evaluation["onnx_parity_max_abs_diff"].items():
        assert diff <= 1e-4, graph
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["latent"]
    batch = np.zeros((9, 28, 28, 1), dtype=np.float32)  # dynamic batch dimension
    assert session.run(None, {"image": batch})[0].shape == (9, 7, 7, 2)
    scorer = ort.InferenceSession(str(tmp_path / "scorer.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in scorer.get_outputs()] == ["anomaly_score"]
    assert scorer.run(None, {"image": batch})[0].shape == (9, 1)
    assert manifest.anomaly == ANOMALY
    assert manifest.int8 is None


def test_int8_copy_ships_only_within_its_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _export_tiny(tmp_path)
    rng = np.random.default_rng(2)
    train, test = rng.random((128, 28, 28), dtype=np.float32), rng.random((24, 28, 28), dtype=np.float32)
    spec = quantize_bundle(tmp_path, manifest, train, test, seed=3)
    assert spec is not None  # an untrained net's output survives int8
    assert set(spec.psnr) == {condition.label for condition in CONDITIONS} | {upload.label for upload in UPLOADS}
    assert all(abs(row["delta"]) <= GATE_DB for row in spec.psnr.values())
    write_manifest(tmp_path, manifest.model_copy(update={"int8": spec}))
    reloaded = load_manifest(tmp_path)
    assert reloaded.int8 == spec
    verify_checksums(tmp_path, reloaded)  # the int8 file is covered
    graph = tmp_path / INT8_AUTOENCODER_FILE
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    assert {node.op_type for node in onnx.load(graph).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    x = test[:5, ..., None]
    (float32,) = ort.InferenceSession(str(tmp_path / "autoencoder.onnx")).run(None, {"image": x})
    (int8,) = session.run(["denoised"], {"image": x})
    assert int8.shape == float32.shape
    assert np.abs(int8 - float32).max() < 0.05

    monkeypatch.setattr("training.quantize.GATE_DB", 1e-12)
    assert quantize_bundle(tmp_path, manifest, train, test, seed=3) is None
    assert not graph.exists()


def test_quick_pipeline_end_to_end(tmp_path: Path) -> None:
    data = write_idx_dataset(tmp_path / "data", n_train=450, n_test=200)
    other = write_idx_dataset(tmp_path / "other", n_train=450, n_test=200, seed=1, invert=True)
    out = tmp_path / "models" / "tiny"
    argv = ["run", "--quick", "--dataset", "tiny", "--data-dir", str(data), "--run-dir", str(tmp_path / "run")]
    argv += ["--outlier-dataset", "other", "--outlier-data-dir", str(other)]
    argv += ["--noise-weights", "0.5", "0.1", "0.2", "0.1", "0.1"]
    assert main([*argv, "--out", str(out), "--widths", "4", "8", "8", "--latent-channels", "4"]) == 0
    manifest = load_manifest(out)
    written = json.loads((out / "manifest.json").read_text())
    assert written["noise"]["weights"] == written["training"]["noise"]["weights"] == [0.5, 0.1, 0.2, 0.1, 0.1]
    assert (manifest.name, manifest.version) == ("tiny-quick", "0.0.0-quick")  # never mistaken for a real one
    verify_checksums(out, manifest)
    table = manifest.evaluation["denoising"]
    assert set(table) >= {"gaussian 0.5", "salt-pepper 0.1", "speckle 0.5"}
    assert {"noisy input", "median 3x3", "non-local means", "bm3d", "autoencoder", "reference"} <= set(
        table["gaussian 0.5"]
    )
    assert manifest.evaluation["latent_probes"]["latent"]["features"] == 7 * 7 * 4
    assert set(table) >= {"shifted-gaussian 0.5", "poisson 5"}
    upload_rows = manifest.evaluation["uploads"]
    assert list(upload_rows) == [upload.label for upload in UPLOADS]
    assert {"input as sent", "non-local means", "bm3d", "autoencoder", "reference"} <= set(
        upload_rows["clean pass-through"]
    )
    assert "| clean pass-through |" in (out / "README.md").read_text()  # the model card shows them
    anomaly = manifest.anomaly
    assert anomaly.method == "learned head"
    letters = {"letters, fonts held out", "letters, trained fonts redrawn"}
    if not split_fonts(fonts())[1]:  # no serif or monospaced face on this machine
        letters.discard("letters, fonts held out")
    assert set(anomaly.against) == {"other", "inverted", "photographs", "empty or noise-only", *letters}
    assert set(anomaly.details["false_flags_by_kind"]) == {"pooled noise", "shifted", "rotated", "faded"}
    assert "False flags by kind of test digit" in (out / "README.md").read_text()
    assert all(0 <= result["auroc"] <= 1 for result in anomaly.against.values())
    assert set(anomaly.details["methods"]) == {"learned head", "reconstruction error", "latent mahalanobis"}
    for figure in ("loss.png", "denoising.png", "latents.png", "anomaly.png"):
        assert (out / "report" / figure).stat().st_size > 1000
    if manifest.int8 is not None:  # shipped only within its gate, every row measured
        assert set(manifest.int8.psnr) == set(table) | set(upload_rows)
        assert (out / manifest.int8.graph.file).is_file()
    else:
        assert not (out / INT8_AUTOENCODER_FILE).exists()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["limit_train"] == 400
    assert manifest.training["epochs"] == 2

    # Exported again on its own, with a version: the manifest keeps what training ran with.
    again = tmp_path / "again"
    export = ["export", "--dataset", "tiny", "--data-dir", str(data), "--run-dir", str(tmp_path / "run")]
    assert main([*export, "--out", str(again), "--version", "9.9.9"]) == 0
    reexported = load_manifest(again)
    assert reexported.version == reexported.training["version"] == "9.9.9"
    assert reexported.training["epochs"] == 2
    assert reexported.training["architecture"]["widths"] == [4, 8, 8]

    # Its anomaly score trained again as a new version: the other graphs unchanged, the upload rows measured.
    rescored = tmp_path / "rescored"
    rescore = ["rescore", str(out), "--version", "0.0.1-quick", "--out", str(rescored), "--quick"]
    rescore += ["--data-dir", str(data), "--outlier-dataset", "other", "--outlier-data-dir", str(other)]
    assert main([*rescore, "--run-dir", str(tmp_path / "rescore-run")]) == 0
    after = load_manifest(rescored)
    verify_checksums(rescored, after)
    assert after.version == "0.0.1-quick"
    assert load_manifest(out).version == "0.0.0-quick"  # the bundle it came from is left as it was
    for graph in ("autoencoder", "encoder", "decoder"):
        assert after.graphs[graph].sha256 == manifest.graphs[graph].sha256
    assert after.graphs["scorer"].sha256 != manifest.graphs["scorer"].sha256
    assert set(after.anomaly.against) == set(anomaly.against)
    assert after.anomaly.details["graphs_from"] == "tiny-quick 0.0.0-quick"
    assert list(after.evaluation["uploads"]) == [upload.label for upload in UPLOADS]
    assert after.evaluation["denoising"] == table
    card = (rescored / "README.md").read_text()
    assert "trained again for the autoencoder, encoder and decoder of `tiny-quick 0.0.0-quick`" in card
    assert "| clean pass-through |" in card
    assert (rescored / "report" / "anomaly.png").stat().st_size > 1000

    # Training continued from that run: the autoencoder starts from its weights, the reference from scratch for
    # the epochs of both.
    more = tmp_path / "more"
    train = ["train", "--quick", "--dataset", "tiny", "--data-dir", str(data), "--run-dir", str(more)]
    train += ["--widths", "4", "8", "8", "--latent-channels", "4"]
    assert main([*train, "--init-from", str(tmp_path / "run")]) == 0
    summary = json.loads((more / "train_summary.json").read_text())
    assert summary["init_from"]["run"] == str(tmp_path / "run")
    assert summary["init_from"]["config"]["epochs"] == 2
    assert summary["autoencoder"]["epochs_run"] == 2
    assert len(summary["reference"]["history"]["loss"]) == 2 + 2
    assert summary["epochs_total"] == 2 + 2
    # ... and from that one: the chain is kept, latest first, and its epochs counted in all.
    again = tmp_path / "again"
    train[train.index(str(more))] = str(again)
    assert main([*train, "--init-from", str(more), "--no-reference"]) == 0
    summary = json.loads((again / "train_summary.json").read_text())
    assert [summary["init_from"]["run"], summary["init_from"]["init_from"]["run"]] == [str(more), str(tmp_path / "run")]
    assert summary["init_from"]["init_from"]["init_from"] is None
    assert summary["epochs_total"] == 2 + 2 + 2

    # A new autoencoder keeps an earlier run's anomaly head: calibrated and measured again, the same figures.
    keep = ["anomaly", "--quick", "--dataset", "tiny", "--data-dir", str(data), "--run-dir", str(more)]
    keep += ["--outlier-dataset", "other", "--outlier-data-dir", str(other), "--scorer-from", str(tmp_path / "run")]
    assert main(keep) == 0
    kept, first = (json.loads((run / "anomaly.json").read_text()) for run in (more, tmp_path / "run"))
    assert kept["details"]["scorer_from"] == str(tmp_path / "run")
    assert (kept["threshold"], kept["against"]) == (first["threshold"], first["against"])
    assert kept["details"]["history"] == first["details"]["history"]  # not trained again
