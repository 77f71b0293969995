"""One JSON error shape for every failure, and the handlers that produce it.

Every error body is ``{"error": {"status", "code", "message", "request_id"}}``;
a batch item at fault adds ``"index"``. Under ``/v2`` (the Open Inference Protocol) the same
errors take that protocol's shape, ``{"error": "message"}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("denoise.errors")


class ApiError(Exception):
    """An error a client can act on; raised anywhere, rendered by :func:`install_handlers`."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, index: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.headers = headers or {}


class UndecodableImage(ApiError):
    status, code = 400, "undecodable_image"


class BadRequestBody(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class ModelNotFound(ApiError):
    status, code = 404, "model_not_found"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ApiError):
    status, code = 422, "invalid_input"


class DeadlineExceeded(ApiError):
    status, code = 504, "deadline_exceeded"


class ClientGone(ApiError):
    """The client closed its connection (or cancelled its call) before its work ran: nobody reads the
    answer, so the work is dropped. 499 as nginx logs it."""

    status, code = 499, "client_closed_request"


class NotReady(ApiError):
    status, code = 503, "not_ready"


class Overloaded(ApiError):
    status, code = 503, "overloaded"


def error_body(
    status: int, code: str, message: str, request_id: str | None, index: int | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message, "request_id": request_id}
    if index is not None:
        error["index"] = index
    return {"error": error}


#: Characters of what a client sent (a name, a path) that an error message or a log line quotes.
CLIP_CHARS = 80


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """``text`` as an error message may quote it: at most ``limit`` characters (then an ellipsis and the
    length), control characters escaped, so that no answer or log line echoes a client's payload whole."""
    shown = text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    return shown.encode("unicode_escape").decode("ascii") if not shown.isprintable() else shown


def unloaded_message(name: str, bundle: str) -> str:
    """What a request for a model whose bundle was unloaded on purpose is told, whichever door it came by."""
    return (
        f"model {name!r} was unloaded through the repository API; an admin loads it again with "
        f"POST /v2/repository/models/{bundle}/load"
    )


#: The longest error message sent (gRPC carries it in a trailer, whose default limit is 8 KiB).
MAX_MESSAGE_CHARS = 1000


def bounded(message: str) -> str:
    """An error message cut to :data:`MAX_MESSAGE_CHARS`: the last guard against echoing a client's payload."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "\u2026"


V2_PREFIX = "/v2"


def is_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


#: Refusals of what a request holds that the Open Inference Protocol answers as 400, its one status
#: for a bad request.
V2_AS_BAD_REQUEST = frozenset({415, 422})


def described(error: ApiError) -> str:
    """The message with the batch item at fault, for protocols whose error is a message alone."""
    return (f"image {error.index}: " if error.index is not None else "") + error.message


def render(
    path: str,
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    index: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response in the shape of the protocol ``path`` belongs to."""
    message = bounded(message)
    if is_v2(path):
        where = f"image {index}: " if index is not None else ""
        status = 400 if status in V2_AS_BAD_REQUEST else status
        return JSONResponse({"error": where + message}, status_code=status, headers=headers)
    return JSONResponse(error_body(status, code, message, request_id, index), status_code=status, headers=headers)


def error_response(error: ApiError, request_id: str | None, path: str = "") -> JSONResponse:
    """The response for ``error``, rendered the same way wherever it is raised."""
    return render(path, error.status, error.code, error.message, request_id, error.index, error.headers)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _respond(request: Request, status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return render(
        request.url.path, status, code, message, _request_id(request), extra.get("index"), extra.get("headers")
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc, _request_id(request), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        return _respond(request, 422, "invalid_parameter", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no endpoint at {clip(request.url.path)}; see /docs for the API"
        if exc.status_code == 405:
            message = f"method {clip(request.method)} not allowed on {clip(request.url.path)}"
        return _respond(request, exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Nobody reads this answer; it is only logged and counted.
        return _respond(request, ClientGone.status, ClientGone.code, "the client closed the connection mid-request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": _request_id(request)})
        return _respond(request, 500, "internal_error", "internal error; the request id identifies it in the logs")
