"""Figures written next to a bundle: loss curves, denoising grids, latent projection, and the table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA

from training.evaluate import CONDITIONS, Denoiser, noisy_test_set


def loss_curves(histories: dict[str, dict[str, list[float]]], losses: Mapping[str, str], path: Path) -> None:
    """Training and validation loss per model; ``losses`` names each model's loss function."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, history in histories.items():
        epochs = np.arange(1, len(history["loss"]) + 1)
        (line,) = ax.plot(epochs, history["loss"], label=f"{name} train ({losses[name]})")
        ax.plot(epochs, history["val_loss"], "--", color=line.get_color(), label=f"{name} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Training and validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def denoising_grid(clean: np.ndarray, denoise: Denoiser, seed: int, path: Path, per_condition: int = 8) -> None:
    """Rows of clean / noisy / denoised test images for every noise kind and level."""
    images = clean[:per_condition]
    rows: list[tuple[str, np.ndarray]] = []
    for condition in CONDITIONS:
        noisy = noisy_test_set(clean, condition, seed)[:per_condition]
        rows += [("clean", images), (f"noisy {condition.label}", noisy), ("denoised", denoise(noisy))]
    fig, axes = plt.subplots(len(rows), per_condition, figsize=(per_condition * 0.9, len(rows) * 0.95))
    for r, (title, batch) in enumerate(rows):
        for c in range(per_condition):
            ax = axes[r, c]
            ax.imshow(batch[c], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def latent_projection(latents: np.ndarray, labels: np.ndarray, path: Path, seed: int) -> None:
    points = PCA(n_components=2, random_state=seed).fit_transform(latents.reshape(len(latents), -1))
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6)
    ax.legend(*scatter.legend_elements(), title="label", fontsize=7, loc="best")
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
