"""Client for the denoise service: sync and async, with retries and typed errors.

>>> from denoise_client import Client
>>> with Client("http://127.0.0.1:8000") as client:
...     clean = client.denoise("noisy.png")          # bytes of the denoised PNG
"""

from denoise_client.client import AsyncClient, Client, Scored
from denoise_client.errors import (
    BadRequest,
    DenoiseError,
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    ProtocolViolation,
    ServerError,
    ServiceUnavailable,
    TransportFailure,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "DenoiseError",
    "InvalidInput",
    "ModelNotFound",
    "PayloadTooLarge",
    "ProtocolViolation",
    "Scored",
    "ServerError",
    "ServiceUnavailable",
    "TransportFailure",
    "Unauthorized",
    "UnsupportedMediaType",
]
