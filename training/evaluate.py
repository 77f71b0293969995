"""Honest evaluation: PSNR and SSIM of every denoiser on the same noisy test images.

Rows are the noisy input, classical denoisers (Gaussian blur, median 3x3,
non-local means, BM3D on a subset), the reference network and our model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import denoise_nl_means, estimate_sigma
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression

from training.noise import NoiseKind, corrupt

#: A denoiser maps a float32 batch (n, 28, 28) in [0, 1] to the same shape.
Denoiser = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Condition:
    kind: NoiseKind
    level: float

    @property
    def label(self) -> str:
        return f"{self.kind} {self.level:g}"


CONDITIONS: tuple[Condition, ...] = (
    Condition("gaussian", 0.1),
    Condition("gaussian", 0.3),
    Condition("gaussian", 0.5),
    Condition("gaussian", 0.7),
    Condition("salt-pepper", 0.1),
    Condition("speckle", 0.5),
    Condition("shifted-gaussian", 0.5),  # the mean-shifted Gaussian: clip(x + N(0.5, 0.5), 0, 1)
    Condition("poisson", 5),
)
CLASSICAL = ("gaussian blur", "median 3x3", "non-local means", "bm3d")


def gaussian_blur(images: np.ndarray) -> np.ndarray:
    return np.asarray(ndimage.gaussian_filter(images, sigma=(0, 1.0, 1.0)))


def median3(images: np.ndarray) -> np.ndarray:
    return np.asarray(ndimage.median_filter(images, size=(1, 3, 3)))


def nl_means(images: np.ndarray) -> np.ndarray:
    """Non-local means, its strength set from each image's estimated noise (blind, like our model)."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        sigma = float(estimate_sigma(image))
        out[i] = denoise_nl_means(image, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6)
    return out


def bm3d_denoise(images: np.ndarray) -> np.ndarray:
    import bm3d  # optional and slow: imported only when evaluated

    out = np.empty_like(images)
    for i, image in enumerate(images):
        sigma = max(float(estimate_sigma(image)), 1e-3)
        out[i] = np.clip(bm3d.bm3d(image, sigma_psd=sigma), 0.0, 1.0)
    return out


def noisy_test_set(clean: np.ndarray, condition: Condition, seed: int) -> np.ndarray:
    index = CONDITIONS.index(condition) if condition in CONDITIONS else 99
    return corrupt(clean, condition.kind, condition.level, np.random.default_rng([seed, 20_000 + index]))


def mean_psnr(clean: np.ndarray, restored: np.ndarray) -> float:
    # A perfect restoration has infinite PSNR; cap it so one image cannot dominate the mean.
    psnr = [
        100.0 if np.array_equal(c, r) else peak_signal_noise_ratio(c, r, data_range=1.0)
        for c, r in zip(clean, restored, strict=True)
    ]
    return float(np.mean(np.minimum(psnr, 100.0)))


def mean_scores(clean: np.ndarray, restored: np.ndarray) -> dict[str, float]:
    ssim = [structural_similarity(c, r, data_range=1.0) for c, r in zip(clean, restored, strict=True)]
    return {"psnr": mean_psnr(clean, restored), "ssim": float(np.mean(ssim)), "n": len(clean)}


def binary_crossentropy(clean: np.ndarray, restored: np.ndarray) -> float:
    eps = 1e-7
    p = np.clip(restored.astype(np.float64), eps, 1 - eps)
    return float(np.mean(-(clean * np.log(p) + (1 - clean) * np.log(1 - p))))


def scores_row(
    target: np.ndarray, sent: np.ndarray, networks: dict[str, Denoiser], *, as_sent: str, bm3d_subset: int
) -> dict[str, Any]:
    """Every method's scores on one condition: the input as it came (named ``as_sent``), the classical
    denoisers and ``networks``; BM3D on the first ``bm3d_subset`` images, with the networks on the same ones."""
    methods: dict[str, Denoiser] = {
        as_sent: lambda x: x,
        "gaussian blur": gaussian_blur,
        "median 3x3": median3,
        "non-local means": nl_means,
        **networks,
    }
    row: dict[str, Any] = {name: mean_scores(target, method(sent)) for name, method in methods.items()}
    if bm3d_subset > 0:
        subset = slice(0, min(bm3d_subset, len(target)))
        row["bm3d"] = mean_scores(target[subset], bm3d_denoise(sent[subset]))
        row["bm3d"]["networks_on_same_images"] = {
            name: mean_scores(target[subset], net(sent[subset])) for name, net in networks.items()
        }
    return row


def row_summary(label: str, row: dict[str, Any]) -> str:
    return f"{label}: " + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in row.items())


def denoising_table(
    clean: np.ndarray,
    networks: dict[str, Denoiser],
    *,
    seed: int,
    bm3d_subset: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score every method on every condition; BM3D runs on the first ``bm3d_subset`` images."""
    table: dict[str, Any] = {}
    for condition in CONDITIONS:
        noisy = noisy_test_set(clean, condition, seed)
        table[condition.label] = scores_row(clean, noisy, networks, as_sent="noisy input", bm3d_subset=bm3d_subset)
        log(row_summary(condition.label, table[condition.label]))
    return table


def bce_at(clean: np.ndarray, networks: dict[str, Denoiser], seed: int, sigma: float = 0.5) -> dict[str, float]:
    noisy = noisy_test_set(clean, Condition("gaussian", sigma), seed)
    return {name: binary_crossentropy(clean, net(noisy)) for name, net in networks.items()}


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    total = 0
    for cluster in np.unique(clusters):
        total += int(np.bincount(labels[clusters == cluster]).max())
    return total / len(labels)


def latent_probes(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray, seed: int
) -> dict[str, float]:
    """k-means (10 clusters) purity on the test features, and a linear probe fitted on train features."""
    train_x = train_features.reshape(len(train_features), -1)
    test_x = test_features.reshape(len(test_features), -1)
    clusters = KMeans(n_clusters=10, n_init=10, random_state=seed).fit_predict(test_x)
    probe = LogisticRegression(max_iter=2000).fit(train_x, train_labels)
    return {
        "kmeans10_purity": purity(test_labels, clusters),
        "logistic_probe_accuracy": float(probe.score(test_x, test_labels)),
        "features": int(train_x.shape[1]),
    }


def verdict(table: dict[str, Any], ours: str, reference: str | None) -> dict[str, Any]:
    """Does our model beat every classical denoiser everywhere, and the reference at sigma 0.5?"""
    beaten: list[str] = []
    for condition, row in table.items():
        for method in CLASSICAL:
            if method not in row:
                continue
            ours_psnr = row[method]["networks_on_same_images"][ours]["psnr"] if method == "bm3d" else row[ours]["psnr"]
            if ours_psnr <= row[method]["psnr"]:
                beaten.append(f"{method} at {condition}")
    result: dict[str, Any] = {"beats_all_classical": not beaten, "classical_not_beaten": beaten}
    if reference is not None:
        key = "gaussian 0.5"
        result["psnr_gain_over_reference_sigma_0.5_db"] = table[key][ours]["psnr"] - table[key][reference]["psnr"]
    return result
