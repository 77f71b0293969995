"""Settings, from environment variables prefixed ``DENOISE_``; unsafe values are rejected at start."""

from __future__ import annotations

import os
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.logs import LogFormat

ProviderSetting = Literal["auto", "cpu", "cuda"]
#: Formats that may be allow-listed; each is a single-image format Pillow decodes.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


def available_cores() -> int:
    """CPU cores this process may run on (honours taskset and cpusets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Settings(BaseSettings):
    """The service's settings. Each is read from the environment variable ``DENOISE_<NAME>``; the text
    under each field is its documentation (docs/configuration.md is generated from it)."""

    model_config = SettingsConfigDict(env_prefix="DENOISE_", extra="ignore", use_attribute_docstrings=True)

    model_dir: Path = Path("models")
    """Folder holding one sub-folder per model bundle."""
    models: str = ""
    """Bundles to load (comma-separated names); empty loads every bundle in ``model_dir``."""
    default_model: str = "mnist"
    """Model used when a request names none."""
    model_poll_s: float = Field(default=10.0, ge=0, le=3600)
    """Seconds between scans of ``model_dir`` for bundles added, removed or replaced (a symlink swapped included),
    which every worker then loads, verifies, warms and swaps in without a restart; 0 turns scanning off (the V2
    repository API's load and unload still work). Each scan reads the folders' file listings only, so a short
    period costs nothing measurable; 10 s puts a rollout in service well within a Kubernetes volume's own update
    delay."""
    worker_state_dir: Path | None = None
    """Folder where the workers of one service share the models each serves and the V2 repository's load and unload
    decisions; ``python -m app`` makes one for several workers. Unset: each worker keeps its own."""
    providers: ProviderSetting = "auto"
    """Execution provider: ``auto`` (CUDA if really usable, else CPU), ``cpu`` or ``cuda`` (required)."""
    int8: bool = True
    """On CPU, run a bundle's int8 autoencoder where it ships one (it passed a 0.05 dB PSNR gate at export; /denoise,
    /reconstruct from images, V2); false runs float32 only."""

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0`` in containers)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """HTTP port."""
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """The Open Inference Protocol's gRPC service, in the same process; 0 turns it off."""
    workers: int = Field(default=0, ge=0, le=64)
    """uvicorn worker processes; 0 means one per usable core. The HTTP path is Python and single-threaded per
    process, so processes, not onnxruntime threads, use the cores."""
    threads: int = Field(default=0, ge=0, le=256)
    """onnxruntime intra-op threads per session; 0 means cores / workers (at least 1)."""
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Lowest level logged."""
    log_format: LogFormat = "json"
    """``json``: one JSON object per line (for log collectors); ``text``: for a person at a terminal."""
    shutdown_grace_s: int = Field(default=30, ge=0)
    """Seconds to finish in-flight requests after SIGTERM before exiting."""
    keep_alive_s: int = Field(default=5, ge=1)
    """Seconds an idle keep-alive connection stays open."""
    max_connections: int = Field(default=2048, ge=1)
    """Connections handled at once per worker; beyond it uvicorn answers 503."""
    max_inflight: int = Field(default=128, ge=1)
    """Image and latent requests in progress per worker; beyond it new ones get 503 with Retry-After at once."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds a client has to send its request line and headers."""
    max_header_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    """Largest request line and headers together, in bytes; beyond it the connection gets 431 and is closed (Envoy's
    default is 60 KiB, nginx's 32 KiB)."""
    max_headers: int = Field(default=100, ge=8, le=10_000)
    """Most request header fields; beyond it the connection gets 431 and is closed (Envoy's default is 100)."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds a client has to send the whole body, from the start of the request."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest request body in bytes, enforced while the body streams in."""
    max_image_pixels: int = Field(default=4_000_000, ge=28 * 28)
    """Largest image (width x height) accepted when resizing is asked for, checked before decoding."""
    image_formats: str = "PNG"
    """Image formats accepted (comma-separated Pillow names); PNG only unless allow-listed."""
    max_batch_images: int = Field(default=256, ge=1, le=4096)
    """Most images in one request (multipart ``file`` fields or latents)."""

    api_keys: SecretStr = SecretStr("")
    """API keys (comma-separated); when any is set, every route but health and the docs needs ``Authorization: Bearer
    <key>``."""
    api_keys_file: Path | None = None
    """A file with more API keys, one per line (``#`` comments and blank lines ignored)."""
    admin_api_keys: SecretStr = SecretStr("")
    """Keys (comma-separated) that may load and unload models through the V2 repository API; compared like
    ``api_keys``, never logged. Unset: those calls are refused with 403."""
    metrics_need_key: bool = False
    """Whether ``/metrics`` needs a key too when keys are set."""
    demo: bool = True
    """Serve the demo page at ``/demo/`` (and redirect ``/`` to it)."""
    cors_origins: str = ""
    """Origins allowed to call the API from a browser (comma-separated, or ``*``); empty: CORS off."""

    anomaly_scores: bool = True
    """Score every image input's unlikeness to the training data (X-Anomaly-Score, anomaly_scores), in the same
    inference call as the graph it goes to."""

    batching: bool = True
    """Dynamic batching: requests arriving together run as one ONNX Runtime call."""
    batch_max_size: int = Field(default=64, ge=1, le=4096)
    """Most images in one ONNX Runtime call: concurrent requests merge up to it, and a larger request runs in chunks
    of it."""
    batch_max_delay_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    """How long a batch may wait for more requests, in milliseconds (0: take what is queued)."""
    batch_concurrency: int = Field(default=0, ge=0, le=64)
    """ONNX Runtime calls in flight at once per graph in each worker; 0 means the number of workers, so that one
    worker alone can use the whole CPU budget (workers x threads)."""
    queue_size: int = Field(default=256, ge=1)
    """Requests waiting per graph before new ones get 503 with Retry-After."""

    @field_validator("models")
    @classmethod
    def _names(cls, value: str) -> str:
        return ",".join(name.strip() for name in value.split(",") if name.strip())

    @field_validator("image_formats")
    @classmethod
    def _formats(cls, value: str) -> str:
        formats = [name.strip().upper() for name in value.split(",") if name.strip()]
        unknown = [name for name in formats if name not in ALLOWED_FORMATS]
        if not formats or unknown:
            raise ValueError(f"image formats must be among {', '.join(ALLOWED_FORMATS)}; got {value!r}")
        return ",".join(formats)

    @field_validator("api_keys_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no API key file at {value}")
        return value

    @model_validator(mode="after")
    def _batch_fits(self) -> Settings:
        if self.batch_max_size > self.max_batch_images:
            self.batch_max_size = self.max_batch_images
        return self

    @property
    def model_names(self) -> list[str]:
        return self.models.split(",") if self.models else []

    @cached_property
    def image_format_list(self) -> tuple[str, ...]:
        return tuple(self.image_formats.split(","))

    @cached_property
    def image_media_types(self) -> tuple[str, ...]:
        return tuple(f"image/{fmt.lower()}" for fmt in self.image_format_list)

    @cached_property
    def api_key_list(self) -> tuple[str, ...]:
        keys = [key.strip() for key in self.api_keys.get_secret_value().split(",")]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text().splitlines()
            keys += [line.strip() for line in lines if not line.lstrip().startswith("#")]
        return tuple(key for key in keys if key)

    @cached_property
    def admin_api_key_list(self) -> tuple[str, ...]:
        return tuple(key.strip() for key in self.admin_api_keys.get_secret_value().split(",") if key.strip())

    @cached_property
    def cors_origin_list(self) -> tuple[str, ...]:
        return tuple(origin.strip() for origin in self.cors_origins.split(",") if origin.strip())

    @property
    def worker_count(self) -> int:
        return self.workers or available_cores()

    @property
    def intra_op_threads(self) -> int:
        return self.threads or max(1, available_cores() // self.worker_count)

    @property
    def concurrent_batches(self) -> int:
        return self.batch_concurrency or self.worker_count


@lru_cache
def get_settings() -> Settings:
    return Settings()
