"""A bundle's model card (``README.md`` beside its manifest), rendered from the manifest alone.

    python -m training.model_card models/mnist [models/fashion-mnist ...]

Written by the export too; a test checks that every committed card is what its manifest renders.
The shape follows Hugging Face's model cards: what the model is for, what it was trained on, how
it was evaluated, and what it is not for.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from training.report import anomaly_table, int8_table, markdown_table
from training.uploads import MAX_ROTATION_DEG, MAX_SHIFT_PX
from training.uploads import markdown as uploads_markdown

CARD_FILE = "README.md"
TITLES = {"mnist": "MNIST digits", "fashion-mnist": "Fashion-MNIST garments"}


def _noise(noise: dict[str, Any]) -> str:
    weights = [round(100 * w) for w in noise["weights"]]
    g, sg, sp, sk, po = (noise[key] for key in ("gaussian_sigma", "shifted_gaussian_sigma", "salt_pepper_amount",
                                                "speckle_sigma", "poisson_peak"))  # fmt: skip
    return (
        f"Gaussian `clip(x + σ·N(0, 1))` with σ uniform in {g[0]:g}–{g[1]:g} ({weights[0]}%; σ = 0 is a clean input), "
        f"the mean-shifted Gaussian `clip(x + N(σ, σ))` with σ in {sg[0]:g}–{sg[1]:g} ({weights[1]}%), "
        f"salt-and-pepper {sp[0]:.0%}–{sp[1]:.0%} ({weights[2]}%), speckle σ {sk[0]:g}–{sk[1]:g} ({weights[3]}%) "
        f"and Poisson shot noise at {po[0]:g}–{po[1]:g} photons per white pixel ({weights[4]}%)"
    )


def _earlier_runs(training: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs the autoencoder continued from, earliest first (``training.continued_from`` nests them latest
    first)."""
    runs: list[dict[str, Any]] = []
    earlier = training.get("continued_from")
    while earlier:
        runs.insert(0, earlier)
        earlier = earlier.get("init_from")
    return runs


def _stage(earlier: dict[str, Any], shares: list[float]) -> str:
    """One earlier run: its epochs and recipe, its noise shares where they differ from ``shares``."""
    config = earlier["config"]
    return (
        (f"the release {earlier['bundle']} (" if earlier.get("bundle") else "")
        + f"{earlier['autoencoder']['epochs_run']} epochs (Adam at {config['learning_rate']:g} on a cosine, "
        f"{_loss(config['loss'])}"
        + (f", {_mix(config['uploads'])}" if config.get("uploads") else "")
        + ("" if config["noise"]["weights"] == shares else f", noise shares {_shares(config['noise']['weights'])}")
        + (")" if not earlier.get("bundle") else "))")
    )


def _shares(weights: list[float]) -> str:
    return " / ".join(f"{round(100 * w)}%" for w in weights)


def _loss(loss: str) -> str:
    return "loss: each image's PSNR, averaged" if loss == "psnr" else f"{loss} loss"


def _mix(mix: dict[str, Any]) -> str:
    quality = mix["jpeg_quality"]
    return (
        f"{mix['moved']:.0%} moved (shifted up to {MAX_SHIFT_PX} px or rotated up to {MAX_ROTATION_DEG:g}°, "
        "the target with them), "
        f"{mix['clean']:.0%} clean (the target is the input), {mix['faded']:.0%} faded scans and "
        f"{mix['jpeg']:.0%} JPEGs at quality {quality[0]}–{quality[1]}"
        + (
            f", {mix['artefacts']:.0%} scan artefacts (one or two of blurs, rescans, lines, dust, uneven lighting, "
            "banding and tone curves, under light noise; the target is the clean image)"
            if mix.get("artefacts")
            else ""
        )
    )


def _training(manifest: dict[str, Any]) -> list[str]:
    training = manifest.get("training") or {}
    if "architecture" not in training:
        return []
    widths = training["architecture"]["widths"]
    held_out = round(training["validation_fraction"] * 100)
    lines = [
        "## Training",
        "",
        f"- Data: the {manifest['dataset']} training split, {held_out}% held out for validation; "
        f"{training['epochs']} epochs, batch {training['batch_size']}, Adam at {training['learning_rate']:g} "
        f"on a cosine to {training['final_lr_fraction']:g} of it, {_loss(training['loss'])}, seed {training['seed']}.",
    ]
    stages = [_stage(earlier, training["noise"]["weights"]) for earlier in _earlier_runs(training)]
    if stages:
        lines.append(
            f"- Continued from {'a run' if len(stages) == 1 else 'runs'} of "
            + ", then ".join(stages)
            + "; their configurations and losses are in `manifest.json` under `training.continued_from`."
        )
    lines.append(f"- Noise, drawn afresh for every image in every epoch: {_noise(training['noise'])}.")
    if training.get("uploads"):
        lines.append(f"- Images like callers send among the inputs: {_mix(training['uploads'])}.")
    return [
        *lines,
        f"- Network: convolutions of {widths[0]}, {widths[1]} and {widths[2]} channels at 28×28, 14×14 and 7×7, "
        f"{training['architecture']['depth_7']} more 3×3 convolutions at 7×7 on each side of the latent and "
        f"{training['architecture']['refine_28']} at 28×28 before the output; nothing bypasses the latent.",
        f"- Graphs: ONNX opset {manifest['opset']}, float32, dynamic batch; SHA-256 of each in `manifest.json`, "
        "verified when the service loads them.",
        "",
    ]


def _epochs(training: dict[str, Any]) -> str:
    """The autoencoder's epochs: in every run it continued from, earliest first, and its own."""
    epochs = [int(earlier["autoencoder"]["epochs_run"]) for earlier in _earlier_runs(training)]
    epochs.append(int(training["result"]["autoencoder"]))
    return str(epochs[0]) if len(epochs) == 1 else f"{' + '.join(map(str, epochs))} = {sum(epochs)}"


def _evaluation(manifest: dict[str, Any]) -> list[str]:
    evaluation = manifest.get("evaluation") or {}
    rows = evaluation.get("denoising")
    if not rows:
        return []
    epochs = manifest.get("training", {}).get("result", {})
    reference = (
        f"for {epochs['reference']} epochs (the autoencoder: {_epochs(manifest['training'])})"
        if "reference" in epochs
        else "for as many epochs"
    )
    described = (
        "`reference` is the convolutional autoencoder of Keras' own denoising example (two 3×3 convolutions "
        "of 32 filters with max-pooling down, two transposed convolutions up, a 7×7×32 code that is no bottleneck, "
        f"binary cross-entropy, Adam at 0.001), trained on the same data {reference}"
        if any("reference" in methods for methods in rows.values())
        else "The reference network was not trained for this bundle (`--no-reference`)"
    )
    lines = [
        "## Evaluation",
        "",
        f"Mean PSNR (dB) / SSIM on the {evaluation['test_images']:,} test images, each noise drawn with a fixed "
        f"seed. {described}; the classical denoisers are tuned blind from each image's estimated noise.",
        "",
        markdown_table(rows).rstrip(),
        "",
    ]
    sigma = rows.get("gaussian 0.5", {})
    if "autoencoder" in sigma:
        ours = sigma["autoencoder"]["psnr"]
        against = (
            f", {ours - sigma['reference']['psnr']:.2f} dB above the reference network" if "reference" in sigma else ""
        )
        verdict = evaluation.get("verdict", {})
        classical = (
            "above every classical denoiser on every row"
            if verdict.get("beats_all_classical")
            else f"not above {', '.join(verdict.get('classical_not_beaten', []))} on every row"
        )
        lines.append(f"- Gaussian σ = 0.5: {ours:.2f} dB{against}; {classical}.")
    if "bce_gaussian_0.5" in evaluation:
        bce = evaluation["bce_gaussian_0.5"]
        beside = f", reference {bce['reference']:.4f}" if "reference" in bce else ""
        lines.append(f"- Binary cross-entropy at σ = 0.5: autoencoder {bce['autoencoder']:.4f}{beside}.")
    if "latent_probes" in evaluation:
        latent, pixels = evaluation["latent_probes"]["latent"], evaluation["latent_probes"]["pixels (baseline)"]
        lines.append(
            f"- The latent: a logistic-regression probe reaches {latent['logistic_probe_accuracy']:.3f} test accuracy "
            f"(raw pixels {pixels['logistic_probe_accuracy']:.3f}); "
            f"k-means (10) purity {latent['kmeans10_purity']:.3f} "
            f"(raw pixels {pixels['kmeans10_purity']:.3f})."
        )
    lines.append("")
    if evaluation.get("uploads"):
        networks = [name for name in ("autoencoder", "reference") if name in next(iter(evaluation["uploads"].values()))]
        lines += [
            "Images like callers send (`training/uploads.py`: the parameters are fixed there), scored against "
            "what a perfect denoiser returns (the moved digit itself; the clean digit, light on black, for "
            "the others):",
            "",
            uploads_markdown(evaluation["uploads"], networks).rstrip(),
            "",
        ]
    if manifest.get("int8"):
        lines += [
            "The int8 copy (`autoencoder.int8.onnx`), which the service runs on CPU, against float32 "
            "(mean PSNR on the same rows and images):",
            "",
            int8_table(manifest["int8"]).rstrip(),
            "",
        ]
    lines += _release_gate(evaluation.get("release_gate"))
    return [*lines, "![test images: clean, noisy and denoised](report/denoising.png)", ""]


def _release_gate(gate: dict[str, Any] | None) -> list[str]:
    """The battery this version passed (``python -m training gate``), beside the releases it replaced."""
    if not gate:
        return []
    against = list(gate["against"])
    header = ["row", "float32", "int8", *(f"{title} float32" for title in against), *(f"{t} int8" for t in against)]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(scores: dict[str, float], precision: str) -> str:
        return f"{scores.get(precision, scores['float32']):.2f}"

    for row, scores in gate["battery"].items():
        earlier = [gate["against"][title][row] for title in against]
        table.append(
            "| "
            + " | ".join(
                [
                    row,
                    cell(scores, "float32"),
                    cell(scores, "int8"),
                    *(cell(e, "float32") for e in earlier),
                    *(cell(e, "int8") for e in earlier),
                ]
            )
            + " |"
        )
    compared = ", ".join(against) if against else "no earlier release"
    lines = [
        f"Release gate (`python -m training gate`): mean PSNR (dB) on the battery of `training/battery.py`, "
        f"{gate['test_images']:,} test images, against {compared}; no row may fall more than "
        f"{gate['tolerance_db']:g} dB below the best of them (int8 where a bundle ships one, else float32):",
        "",
        *table,
        "",
    ]
    for row, reason in gate.get("exceptions", {}).items():
        lines += [f"- Accepted fall on `{row}`: {reason}", ""]
    for row, holder in gate.get("held", {}).items():
        lines += [f"- `{row}`: below the best earlier release; `{holder}`, served beside this bundle, holds it", ""]
    return lines


def _anomaly(manifest: dict[str, Any]) -> list[str]:
    anomaly = manifest["anomaly"]
    intro = (
        f"The `{anomaly['method']}` (`scorer.onnx`) scores every image input; above {anomaly['threshold']:.3f} "
        f"(the {anomaly['calibration_quantile']:.0%} quantile of held-out training images) the input is flagged."
    )
    if not anomaly.get("against"):
        return ["## Anomaly score", "", intro, ""]
    intro += " AUROC against what callers send by mistake, the share of it flagged, and false flags on the test set:"
    lines = ["## Anomaly score", "", intro, "", anomaly_table(anomaly).rstrip(), ""]
    details = anomaly.get("details", {})
    by_kind = details.get("false_flags_by_kind")
    if by_kind:
        shares = ", ".join(f"{kind} {share:.1%}" for kind, share in by_kind.items())
        lines += [f"False flags by kind of test digit (all of them digits, none an anomaly): {shares}.", ""]
    if details.get("never_trained_on") and "photographs" in anomaly["against"]:
        lines += [f"Never trained on: {'; '.join(details['never_trained_on'])}.", ""]
    if details.get("scorer_from"):
        lines += [
            f"The learned head is the one trained in `{details['scorer_from']}` (it reads the image only, so it "
            "does not depend on the autoencoder), calibrated and measured again here.",
            "",
        ]
    if details.get("graphs_from"):
        lines += [
            f"The score was trained again for the autoencoder, encoder and decoder of `{details['graphs_from']}`, "
            "which this version ships unchanged; the other methods in the table run on those graphs.",
            "",
        ]
    return lines


def render(manifest: dict[str, Any]) -> str:
    name, version, dataset = manifest["name"], manifest["version"], manifest["dataset"]
    h, w, c = manifest["latent_shape"]
    title = TITLES.get(dataset, dataset)
    lines = [
        f"# `{name}` {version}: a blind denoising autoencoder for {title}",
        "",
        f"{manifest['description'].rstrip('.') + '. ' if manifest['description'] else ''}It removes noise from "
        "28×28 grayscale images, light on black, of the kind it was trained on, without being told the noise "
        f"kind or level; its encoder and decoder give a {h}×{w}×{c} = {h * w * c}-float latent and back; a small "
        "scorer says how unlike its training data an input is. Served by this repository's service as the model "
        f"`{name}` (`/denoise?model={name}`, V2 `{name}`, `{name}-autoencoder`, `{name}-encoder`, "
        f"`{name}-decoder`).",
        "",
        *_training(manifest),
        *_evaluation(manifest),
        *_anomaly(manifest),
        "## What it is not for",
        "",
        f"- Anything but 28×28 grayscale {title}, light on black: other images come back as a plausible "
        "training image, not as themselves. The anomaly flag marks many of them; trust an output only where "
        "it is not flagged.",
        "- Dark-on-light scans need `invert=true`; larger images `resize=true`, which loses detail.",
        "- Noise far outside the training mixture (structured noise, occlusions, heavy blur) is not removed, "
        "and a clean input comes back slightly smoothed.",
        "",
    ]
    return "\n".join(lines)


def write(bundle: Path) -> Path:
    manifest = json.loads((bundle / "manifest.json").read_text())
    card = bundle / CARD_FILE
    card.write_text(render(manifest))
    return card


def main(argv: list[str] | None = None) -> int:
    for folder in argv if argv is not None else sys.argv[1:]:
        print(write(Path(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
