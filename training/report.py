"""Figures written next to a bundle: loss curves, denoising grids, latent projection, and the table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from skimage.metrics import peak_signal_noise_ratio
from sklearn.decomposition import PCA

from training.evaluate import CONDITIONS, Denoiser, noisy_test_set

LOSS_NAMES = {
    "mse": "mean squared error",
    "psnr": "minus each image's PSNR (dB)",
    "binary_crossentropy": "binary cross-entropy",
}


def loss_curves(histories: dict[str, dict[str, list[float]]], losses: Mapping[str, str], path: Path) -> None:
    """One panel per loss function (their scales differ): each model's training against validation loss."""
    by_loss: dict[str, list[str]] = {}
    for name in histories:
        by_loss.setdefault(losses[name], []).append(name)
    fig, axes = plt.subplots(1, len(by_loss), figsize=(5 * len(by_loss), 3.6), squeeze=False)
    for ax, (loss, names) in zip(axes[0], by_loss.items(), strict=True):
        for name in names:
            history = histories[name]
            epochs = np.arange(1, len(history["loss"]) + 1)
            (line,) = ax.plot(epochs, history["loss"], label=f"{name}: training")
            ax.plot(epochs, history["val_loss"], "--", color=line.get_color(), label=f"{name}: validation")
        ax.set_title(f"{LOSS_NAMES.get(loss, loss)} ({', '.join(names)})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(LOSS_NAMES.get(loss, loss))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def denoising_grid(clean: np.ndarray, denoise: Denoiser, seed: int, path: Path, per_condition: int = 8) -> None:
    """One row of clean test images, then a noisy and a denoised row per noise kind and level,
    each image titled with its PSNR against the clean one."""
    images = clean[:per_condition]
    rows: list[tuple[str, np.ndarray, bool]] = [("clean", images, False)]
    for condition in CONDITIONS:
        noisy = noisy_test_set(clean, condition, seed)[:per_condition]
        rows += [(f"noisy\n{condition.label}", noisy, True), ("denoised", denoise(noisy), True)]
    fig, axes = plt.subplots(len(rows), per_condition, figsize=(per_condition * 0.75 + 0.9, len(rows) * 0.86))
    for r, (title, batch, scored) in enumerate(rows):
        for c in range(per_condition):
            ax = axes[r, c]
            ax.imshow(batch[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if scored:
                psnr = peak_signal_noise_ratio(images[c], np.clip(batch[c], 0, 1), data_range=1.0)
                ax.set_title(f"{min(psnr, 99.9):.1f} dB", fontsize=6, pad=1.5)
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=0.14, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def latent_projection(
    latents: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path, seed: int
) -> None:
    points = PCA(n_components=2, random_state=seed).fit_transform(latents.reshape(len(latents), -1))
    fig, ax = plt.subplots(figsize=(6.5, 5))
    cmap = plt.get_cmap("tab10")
    for index, name in enumerate(class_names):
        chosen = labels == index
        ax.scatter(points[chosen, 0], points[chosen, 1], color=cmap(index % 10), s=2, alpha=0.6, label=name)
    ax.legend(title="class", fontsize=7, markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("Test latents, first two principal components")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(table: dict[str, Any]) -> str:
    """PSNR / SSIM per method (rows) and condition (columns), as Markdown."""
    conditions = list(table)
    methods = list(next(iter(table.values())))
    lines = [
        "| method | " + " | ".join(conditions) + " |",
        "|---|" + "---|" * len(conditions),
    ]
    for method in methods:
        cells = []
        for condition in conditions:
            score = table[condition].get(method)
            cells.append(f"{score['psnr']:.2f} / {score['ssim']:.3f}" if score else "")
        n = table[conditions[0]][method]["n"]
        lines.append(f"| {method} (n={n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SCORE_PANELS_PER_ROW = 4


def score_distributions(
    scores: Mapping[str, np.ndarray], threshold: float, against: Mapping[str, Mapping[str, float]], path: Path
) -> None:
    """The anomaly score of the test set's noisy images against each out-set's, one panel each, with the threshold."""
    out_sets = [name for name in scores if name != "typical"]
    columns = min(len(out_sets), SCORE_PANELS_PER_ROW)
    rows = -(-len(out_sets) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(out_sets) :]:
        ax.set_visible(False)
    everything = np.concatenate(list(scores.values()))
    bins = np.linspace(np.percentile(everything, 0.5), np.percentile(everything, 99.5), 60)
    for ax, name in zip(axes.flat, out_sets, strict=False):
        ax.hist(np.clip(scores["typical"], bins[0], bins[-1]), bins, alpha=0.6, density=True, label="own test set")
        ax.hist(np.clip(scores[name], bins[0], bins[-1]), bins, alpha=0.6, density=True, label=name)
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
        result = against[name]
        ax.set_title(f"{name}: AUROC {result['auroc']:.3f}, {result['flagged']:.0%} flagged", fontsize=9)
        ax.set_xlabel("anomaly score (higher = less typical)")
        ax.set_yticks([])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def anomaly_table(anomaly: Mapping[str, Any]) -> str:
    """Every method measured for the anomaly score: AUROC against each out-set (and the share flagged at
    its threshold), and false flags on the test set, as Markdown; the shipped method first."""
    methods: dict[str, Any] = anomaly["details"]["methods"]
    order = [anomaly["method"], *(name for name in methods if name != anomaly["method"])]
    out_sets = list(methods[anomaly["method"]]["against"])
    lines = [
        "| method | " + " | ".join(f"AUROC vs {name} (flagged)" for name in out_sets) + " | false flags |",
        "|---|" + "---|" * (len(out_sets) + 1),
    ]
    for name in order:
        result = methods[name]
        cells = [f"{result['against'][o]['auroc']:.3f} ({result['against'][o]['flagged']:.1%})" for o in out_sets]
        label = f"{name} (shipped)" if name == anomaly["method"] else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {result['false_flags']:.1%} |")
    return "\n".join(lines) + "\n"


def int8_table(int8: Mapping[str, Any]) -> str:
    """The int8 autoencoder against float32: mean PSNR on every evaluation row and the change, as Markdown."""
    rows: Mapping[str, Mapping[str, float]] = int8["psnr"]
    lines = [
        "| graph | " + " | ".join(rows) + " |",
        "|---|" + "---|" * len(rows),
        "| float32 | " + " | ".join(f"{row['float32']:.3f}" for row in rows.values()) + " |",
        "| int8 | " + " | ".join(f"{row['int8']:.3f}" for row in rows.values()) + " |",
        "| change | " + " | ".join(f"{row['int8'] - row['float32']:+.3f}" for row in rows.values()) + " |",
    ]
    return "\n".join(lines) + "\n"
