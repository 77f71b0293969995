"""Every training parameter in one place, saved beside the result."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from denoise_bundle import IMAGE_SHAPE
from training.noise import BlindNoise
from training.uploads import UploadMix

MAX_LATENT_SIZE = 392  # half of 28 * 28: at least 2x compression


@dataclass(frozen=True)
class Architecture:
    """Channel widths at 28x28, 14x14 and 7x7, the latent channels at 7x7, and the depth.

    ``depth_7`` counts the 3x3 convolutions at 7x7 on each side of the latent;
    ``refine_28`` those at 28x28 after the decoder's last upsampling.
    """

    widths: tuple[int, int, int] = (16, 48, 64)
    latent_channels: int = 8
    depth_7: int = 3
    refine_28: int = 1

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (IMAGE_SHAPE[0] // 4, IMAGE_SHAPE[1] // 4, self.latent_channels)

    @property
    def latent_size(self) -> int:
        h, w, c = self.latent_shape
        return h * w * c


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist"
    #: The bundle's name (its folder and what requests name); the dataset's unless a quick run.
    name: str = "mnist"
    data_dir: Path | None = None
    out_dir: Path = Path("models/mnist")
    version: str = "2.1.0"
    seed: int = 1234
    epochs: int = 30
    batch_size: int = 128
    validation_fraction: float = 1 / 12  # 5,000 of MNIST's 60,000
    learning_rate: float = 2e-3
    #: ``psnr``: each image's PSNR, averaged (as the evaluation scores), so a clean or lightly noisy image's
    #: small error counts as much as a heavily noisy one's large error.
    loss: Literal["mse", "psnr", "binary_crossentropy"] = "psnr"
    early_stopping_patience: int = 5
    #: The learning rate falls along a cosine from ``learning_rate`` to this fraction of it over ``epochs``.
    final_lr_fraction: float = 0.01
    architecture: Architecture = field(default_factory=Architecture)
    noise: BlindNoise = field(default_factory=BlindNoise)
    #: Images like callers send (moved, clean, faded, JPEG) among the training inputs.
    uploads: UploadMix = field(default_factory=UploadMix)
    #: A run folder whose autoencoder (same architecture) training continues from; its epochs count
    #: towards the reference network's, which always trains from scratch.
    init_from: Path | None = None
    #: Use only this many training / test images (quick mode); ``None`` uses all.
    limit_train: int | None = None
    limit_test: int | None = None
    #: Also train the reference network on the same data and epochs,
    #: with the example's own recipe (Adam at 1e-3, binary cross-entropy).
    train_reference: bool = True
    reference_loss: Literal["mse", "binary_crossentropy"] = "binary_crossentropy"
    reference_learning_rate: float = 1e-3
    #: The anomaly score's outlier exposure and its first out-set: the other dataset, unless named.
    outlier_dataset: str | None = None
    #: Its folder, if not where that dataset is looked for by default.
    outlier_data_dir: Path | None = None
    scorer_epochs: int = 12
    #: A run folder whose trained anomaly head to keep instead of training one (the head reads the image
    #: only, so it does not depend on the autoencoder); it is calibrated and measured again.
    scorer_from: Path | None = None
    #: Random pen drawings among the score's training outliers.
    stroke_images: int = 20_000

    @property
    def other_dataset(self) -> str:
        if self.outlier_dataset:
            return self.outlier_dataset
        return "fashion-mnist" if self.dataset == "mnist" else "mnist"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["data_dir"] = str(self.data_dir) if self.data_dir else None
        data["out_dir"] = str(self.out_dir)
        data["outlier_data_dir"] = str(self.outlier_data_dir) if self.outlier_data_dir else None
        data["init_from"] = str(self.init_from) if self.init_from else None
        data["scorer_from"] = str(self.scorer_from) if self.scorer_from else None
        return data

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
