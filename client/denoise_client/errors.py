"""Typed exceptions carrying the server's error body."""

from __future__ import annotations

from typing import Any

import httpx


class DenoiseError(Exception):
    """The service answered with an error; ``message`` is the server's own."""

    def __init__(
        self, status: int, code: str, message: str, request_id: str | None = None, index: int | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.index = index


class BadRequest(DenoiseError):
    """400: the body could not be decoded."""


class Unauthorized(DenoiseError):
    """401: the service needs an API key (``api_key=`` or ``$DENOISE_API_KEY``), or this one is wrong."""


class ModelNotFound(DenoiseError):
    """404: no such model (or path)."""


class PayloadTooLarge(DenoiseError):
    """413: body or image over the server's limits."""


class UnsupportedMediaType(DenoiseError):
    """415: not an accepted image format or content type."""


class InvalidInput(DenoiseError):
    """422: wrong size, invalid latents or parameters."""


class ServiceUnavailable(DenoiseError):
    """503: not ready or overloaded, still so after the retries."""


class ServerError(DenoiseError):
    """Any other status."""


class TransportFailure(Exception):
    """No answer: connection refused or reset, or a timeout, after the retries; ``url`` is what was tried."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


_BY_STATUS: dict[int, type[DenoiseError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: ModelNotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidInput,
    503: ServiceUnavailable,
}


class ProtocolViolation(Exception):
    """An answer that is not what the service's API says (not a PNG, JSON without the fields it must have),
    such as a proxy's page answered with 200; ``url`` is what was asked."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


def from_response(response: httpx.Response) -> DenoiseError:
    error: dict[str, Any]
    try:
        found = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        found = None
    if isinstance(found, dict):
        error = found
    elif isinstance(found, str):  # the Open Inference Protocol's shape, {"error": "message"} (a /v2 URL)
        error = {"code": "v2_error", "message": found}
    else:
        error = {"code": "http_error", "message": response.text[:500] or response.reason_phrase}
    cls = _BY_STATUS.get(response.status_code, ServerError)
    return cls(
        response.status_code,
        str(error.get("code", "http_error")),
        str(error.get("message", "")),
        error.get("request_id") or response.headers.get("x-request-id"),
        error.get("index"),
    )
