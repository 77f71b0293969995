"""Choosing execution providers: CUDA only where it really runs, CPU otherwise."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnxruntime as ort

from app.config import ProviderSetting

log = logging.getLogger("denoise.runtime")

#: onnxruntime's own log lines go straight to standard error in a format of their own, which would
#: break a JSON log stream; only its errors are let through (what matters of its warnings, such as a
#: CUDA fall-back, the service logs itself).
ORT_LOG_SEVERITY = 3
ort.set_default_logger_severity(ORT_LOG_SEVERITY)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderError(RuntimeError):
    """The requested execution provider cannot be used; the service must not start."""


def requested_providers(setting: ProviderSetting, available: Sequence[str]) -> list[str]:
    """Providers to ask onnxruntime for, in order of preference."""
    if setting == "cpu":
        return [CPU]
    if setting == "cuda":
        if CUDA not in available:
            raise ProviderError(
                "DENOISE_PROVIDERS=cuda but this onnxruntime build has no CUDA provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or set DENOISE_PROVIDERS=auto"
            )
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


def check_active(setting: ProviderSetting, requested: Sequence[str], active: Sequence[str], what: str) -> str:
    """The provider really in use for a session; onnxruntime falls back silently, so compare.

    ``cuda`` raises when CUDA was dropped; ``auto`` logs the fall-back and goes on with CPU.
    """
    provider = active[0] if active else CPU
    if CUDA in requested and provider != CUDA:
        message = f"{what}: CUDA was requested but onnxruntime could not use it (active: {', '.join(active)})"
        if setting == "cuda":
            raise ProviderError(message + "; check the GPU, the driver and CUDA/cuDNN, or set DENOISE_PROVIDERS=auto")
        log.warning("%s; falling back to CPU", message)
    return provider


def available_providers() -> list[str]:
    return list(ort.get_available_providers())
