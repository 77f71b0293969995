"""Request and response bodies, as documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class ErrorDetail(BaseModel):
    status: int = Field(examples=[422])
    code: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["image is 32x32; send 28x28 or add ?resize=true"])
    request_id: str | None = Field(examples=["4f1c0e7a9b2d4c1e8f3a5b6c7d8e9f01"])
    index: int | None = Field(default=None, description="the batch item at fault, when there is one")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class DenoiseBatchResponse(BaseModel):
    model: str
    version: str
    count: int
    images: list[str] = Field(description="denoised 28x28 8-bit grayscale PNGs, base64, in input order")
    anomaly_scores: list[float] | None = Field(
        default=None,
        description="per input image, in input order: how unlike the model's training data it is (higher = less "
        "typical); absent for latents",
    )
    anomalous: list[bool] | None = Field(
        default=None, description="per input image, in input order: score above the model's threshold"
    )


class Latents(BaseModel):
    """What ``/encode`` returns and ``/reconstruct`` accepts."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="model that produced the latents")
    version: str | None = Field(default=None, description="its version; a mismatch is rejected")
    latent_shape: list[int] = Field(examples=[[7, 7, 8]], description="shape of one latent")
    latents: list[list[FiniteFloat]] = Field(description="one flat float32 list per image (row-major)")
    anomaly_scores: list[float] | None = Field(
        default=None, description="from /encode: each image's anomaly score (ignored by /reconstruct)"
    )
    anomalous: list[bool] | None = Field(default=None, description="from /encode: score above the threshold")


class AnomalyInfo(BaseModel):
    method: str = Field(description="how the score is computed")
    threshold: float = Field(description="scores above it are flagged (`X-Anomaly: true`, `anomalous`)")
    calibration_quantile: float = Field(description="share of held-out typical noisy inputs at or below it")
    false_flags: float = Field(description="share of the test set's noisy images flagged")
    against: dict[str, dict[str, float]] = Field(description="per out-set: AUROC and the share flagged")


class Int8Info(BaseModel):
    file: str = Field(description="the int8 (QDQ) copy of the autoencoder in the bundle")
    method: str = Field(description="how it was quantised")
    gate_db: float = Field(description="it ships only if every evaluation row's PSNR is within this of float32")
    worst_psnr_delta_db: float = Field(description="its largest PSNR change on any row (int8 - float32, dB)")


class ModelInfo(BaseModel):
    name: str
    version: str
    dataset: str
    description: str
    created_at: str
    image_shape: list[int]
    latent_shape: list[int]
    opset: int
    anomaly: AnomalyInfo
    int8: Int8Info | None = Field(description="the bundle's int8 autoencoder, if it ships one")
    provider: str = Field(description="onnxruntime execution provider in use")
    graphs: dict[str, str] = Field(
        description="the file each graph runs from: the autoencoder's int8 copy on CPU where the bundle ships one "
        "(DENOISE_INT8)"
    )
    warmup_ms: float


class RefusedVersion(BaseModel):
    version: str
    reason: str


class WorkerModels(BaseModel):
    pid: int = Field(description="the worker process")
    models: dict[str, str] = Field(description="the version of each model it serves")
    refused: dict[str, RefusedVersion] = Field(
        description="versions it refused (the one in service, if any, serves on)"
    )


class ModelsResponse(BaseModel):
    default_model: str
    models: list[ModelInfo]
    failed: dict[str, str] = Field(
        description="why the service is not ready, by bundle: found at start and not in service (and not unloaded "
        "on purpose), or the default model missing"
    )
    refused: dict[str, RefusedVersion] = Field(
        description="versions this worker refused, at start or since, with the reason; the version in service, "
        "if any, serves on"
    )
    workers: list[WorkerModels] = Field(description="what every worker of the service serves and refused")


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    models: list[str] = Field(description="bundles in service")
    failed: dict[str, str] = Field(
        description="why the service is not ready, by bundle (`*`: the model folder as a whole), with why"
    )
    unloaded: list[str] = Field(
        default_factory=list,
        description="bundles taken out of service on purpose (they do not count against readiness)",
    )
    reason: str | None = Field(default=None, description="why the service is not ready (null when it is)")


class Sample(BaseModel):
    label: str = Field(description="the image's class in the dataset")
    png: str = Field(description="a clean 28x28 grayscale PNG from the test set, base64")


class SamplesResponse(BaseModel):
    model: str
    version: str
    samples: list[Sample]
