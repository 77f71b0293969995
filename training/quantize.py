"""A static int8 (QDQ) copy of a bundle's autoencoder, shipped only if it keeps the PSNR.

The float32 autoencoder is first rewritten without changing its output (:mod:`training.int8_prep`: batch
normalisation folded into the transposed convolutions, activation ranges equalised across channels, each
transposed convolution turned into a convolution and an interleave, which have int8 kernels), then
quantised with ONNX Runtime's tools (weights int8 per channel, activations uint8 over their full range on
blind-noise training images). Kept float32: the first convolution, which reads the pixels; the
convolutions around the bottleneck (the latent and its input); the last convolution and the sigmoid,
whose logits an 8-bit grid would blur. Then both graphs denoise every row of the evaluation table on the
whole test set. The int8 graph goes into the bundle only if its
PSNR is within ``GATE_DB`` of float32 on every row; otherwise the bundle ships float32 alone.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from denoise_bundle import INT8_AUTOENCODER_FILE, GraphSpec, Int8Spec, Manifest, file_sha256
from training.battery import evaluation_pairs
from training.evaluate import mean_psnr
from training.int8_prep import (
    CONVOLUTIONS,
    bottleneck_nodes,
    eight_bit_interleaves,
    equalize_activations,
    fold_transposed_batchnorm,
    subpixel_transposed_convolutions,
)
from training.noise import BlindNoise

log = logging.getLogger("training.quantize")

#: The largest PSNR change (dB, either way) on any evaluation row that an int8 graph may cost.
GATE_DB = 0.05
CALIBRATION_IMAGES = 1024
CALIBRATION_BATCH = 64
EQUALIZE_STRENGTH = 0.5
METHOD = (
    "static QDQ (onnxruntime.quantization) after folding batch normalisation into the transposed convolutions, "
    f"equalising activation ranges (strength {EQUALIZE_STRENGTH}) and rewriting each transposed convolution as a "
    "convolution and a DepthToSpace (run on the 8-bit values, channels-last): int8 weights per channel, uint8 "
    f"activations over their min-max range on {CALIBRATION_IMAGES} blind-noise training images; float32: the "
    "first convolution, the convolutions around the latent, the last convolution and the sigmoid"
)


class _Batches(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, input_name: str, images: np.ndarray) -> None:
        starts = range(0, len(images), CALIBRATION_BATCH)
        self._batches = iter([{input_name: images[i : i + CALIBRATION_BATCH]} for i in starts])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def float32_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes an int8 graph keeps float32: the first convolution, those around the bottleneck, the last
    convolution and everything after it."""
    nodes = list(model.graph.node)
    convolutions = [i for i, node in enumerate(nodes) if node.op_type in CONVOLUTIONS]
    return [nodes[convolutions[0]].name, *bottleneck_nodes(model), *(node.name for node in nodes[convolutions[-1] :])]


def quantize(source: Path, target: Path, input_name: str, calibration: np.ndarray) -> None:
    """Write the int8 QDQ version of ``source`` to ``target``, calibrated on ``calibration`` (n, 28, 28, 1)."""
    rewritten = subpixel_transposed_convolutions(
        equalize_activations(fold_transposed_batchnorm(onnx.load(source)), input_name, calibration, EQUALIZE_STRENGTH)
    )
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        onnx.save(rewritten, prepared)
        quant_pre_process(str(prepared), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Batches(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=float32_nodes(onnx.load(prepared)),
        )
    onnx.save(eight_bit_interleaves(onnx.load(target)), target)


def onnx_denoiser(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """An autoencoder graph as a denoiser of float32 (n, 28, 28) images, run by ONNX Runtime on CPU in chunks."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        x = images[..., np.newaxis].astype(np.float32)
        out = [session.run(None, {input_name: x[i : i + 500]})[0] for i in range(0, len(x), 500)]
        return np.concatenate(out)[..., 0]

    return run


def psnr_rows(float32: Path, int8: Path, clean: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """Both graphs' mean PSNR on every evaluation row (the evaluation's own noisy test sets, and the upload
    conditions), and the change."""
    runs = {"float32": onnx_denoiser(float32), "int8": onnx_denoiser(int8)}
    rows: dict[str, dict[str, float]] = {}
    for label, target, sent in evaluation_pairs(clean, seed):
        row = {name: mean_psnr(target, run(sent)) for name, run in runs.items()}
        row["delta"] = row["int8"] - row["float32"]
        rows[label] = row
        log.info("%s: float32 %.3f dB, int8 %.3f dB (%+.3f)", label, *row.values())
    return rows


def quantize_bundle(
    bundle: Path, manifest: Manifest, train_clean: np.ndarray, test_clean: np.ndarray, seed: int
) -> Int8Spec | None:
    """Quantise the bundle's autoencoder and evaluate it; the spec to put in the manifest if it passes the gate.

    ``train_clean`` and ``test_clean`` are float32 (n, 28, 28) in [0, 1]. A graph that fails is deleted.
    """
    spec = manifest.graphs["autoencoder"]
    calibration = BlindNoise().apply(train_clean[:CALIBRATION_IMAGES], np.random.default_rng([seed, 30_000]))
    target = bundle / INT8_AUTOENCODER_FILE
    quantize(bundle / spec.file, target, spec.input.name, calibration[..., np.newaxis].astype(np.float32))
    rows = psnr_rows(bundle / spec.file, target, test_clean, seed)
    worst = max(abs(row["delta"]) for row in rows.values())
    if worst > GATE_DB:
        log.warning("int8 autoencoder not shipped: it moves PSNR by up to %.3f dB (gate %.2f dB)", worst, GATE_DB)
        target.unlink()
        return None
    graph = GraphSpec(file=target.name, sha256=file_sha256(target), input=spec.input, output=spec.output)
    return Int8Spec(graph=graph, method=METHOD, gate_db=GATE_DB, psnr=rows)
