"""Sync and async clients. Both build requests and read answers the same way; only sending differs.

Retries: connection failures (refused, reset, connect timeout) and 503 answers are retried with
exponential backoff, honouring ``Retry-After``; 4xx answers and read timeouts are not.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

from denoise_client.errors import ProtocolViolation, TransportFailure, from_response
from denoise_client.images import Kind, from_png, to_png

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "DENOISE_URL"
API_KEY_ENV = "DENOISE_API_KEY"


def default_url() -> str:
    return os.environ.get(URL_ENV, DEFAULT_URL)


def _auth_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization`` for ``api_key``, or for ``$DENOISE_API_KEY`` when none is given."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return {"authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class Retry:
    """``attempts`` retries after the first try, waiting ``backoff * 2**n`` (at most ``max_wait``)."""

    attempts: int = 3
    backoff: float = 0.1
    max_wait: float = 10.0

    def wait(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after: str = response.headers.get("retry-after", "")
            if retry_after.replace(".", "", 1).isdigit():
                return min(float(retry_after), self.max_wait)
        return min(self.backoff * 2.0**attempt, self.max_wait)


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    kinds: list[Kind] = field(default_factory=list)
    single: bool = True

    def kwargs(self) -> dict[str, Any]:
        return {
            "params": {k: v for k, v in self.params.items() if v is not None},
            "content": self.content,
            "files": self.files,
            "headers": self.headers,
        }


def _is_batch(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _flag(value: bool) -> str | None:
    return "true" if value else None


def _image_call(path: str, images: Any, model: str | None, resize: bool, invert: bool, reinvert: bool = False) -> _Call:
    items = list(images) if _is_batch(images) else [images]
    if not items:
        raise ValueError("give at least one image")
    encoded = [to_png(item) for item in items]
    params = {"model": model, "resize": _flag(resize), "invert": _flag(invert), "reinvert": _flag(reinvert)}
    call = _Call("POST", path, params=params, kinds=[kind for _, kind in encoded], single=not _is_batch(images))
    if call.single:
        call.content = encoded[0][0]
        call.headers["content-type"] = "image/png"
    else:
        call.files = [("file", (f"{i}.png", data, "image/png")) for i, (data, _) in enumerate(encoded)]
        call.headers["accept"] = "application/json"
    return call


def _latents_call(latents: dict[str, Any], model: str | None, reinvert: bool, kind: Kind) -> _Call:
    if not isinstance(latents.get("latents"), list) or not latents["latents"]:
        raise ValueError("not latents as encode returns them: a JSON object with a non-empty 'latents' list")
    count = len(latents["latents"])
    params = {"model": model, "reinvert": _flag(reinvert)}
    call = _Call("POST", "/reconstruct", params=params, kinds=[kind] * count, single=count == 1)
    call.content = httpx.Request("POST", "/", json=latents).content
    call.headers["content-type"] = "application/json"
    return call


@dataclass(frozen=True)
class Scored:
    """Images as ``denoise``/``reconstruct`` return them, with each input's anomaly score and flag
    (input order; empty when the input was latents, which have no score)."""

    images: Any
    anomaly_scores: list[float]
    anomalous: list[bool]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _violation(response: httpx.Response, what: str) -> ProtocolViolation:
    kind = response.headers.get("content-type", "no content type")
    return ProtocolViolation(
        f"{response.request.url} answered {response.status_code} with {what} ({kind}, {len(response.content)} bytes); "
        "is that the denoise service, and not a proxy or another server?",
        url=str(response.request.url),
    )


def _scored_from(response: httpx.Response, call: _Call) -> Scored:
    """The images and scores of an answer, checked: PNGs, as many as were sent; else :class:`ProtocolViolation`."""
    scores: list[float]
    flags: list[bool]
    if response.headers.get("content-type", "").startswith("image/png"):
        images = [response.content]
        score = response.headers.get("x-anomaly-score")
        try:
            scores = [] if score is None else [float(score)]
        except ValueError:
            raise _violation(response, f"an X-Anomaly-Score of {score[:40]!r}") from None
        flags = [] if score is None else [response.headers.get("x-anomaly") == "true"]
    else:
        try:
            body = response.json()
            images = [base64.b64decode(item, validate=True) for item in body["images"]]
        except (ValueError, KeyError, TypeError):
            raise _violation(response, "no 'images' list of base64 PNGs") from None
        scores, flags = body.get("anomaly_scores", []), body.get("anomalous", [])
    if len(images) != len(call.kinds) or not all(image.startswith(PNG_SIGNATURE) for image in images):
        raise _violation(response, f"{len(images)} answers that are not all PNGs, for {len(call.kinds)} inputs")
    results = [from_png(data, kind) for data, kind in zip(images, call.kinds, strict=True)]
    return Scored(results[0] if call.single else results, scores, flags)


def _json_from(response: httpx.Response, *required: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise _violation(response, "a body that is not JSON") from None
    if not isinstance(body, dict) or any(key not in body for key in required):
        raise _violation(response, f"JSON without {', '.join(repr(key) for key in required)}")
    return body


def _images_from(response: httpx.Response, call: _Call, with_scores: bool) -> Any:
    scored = _scored_from(response, call)
    return scored if with_scores else scored.images


def _retry_wait(retry: Retry, attempt: int, outcome: httpx.Response | Exception) -> float | None:
    """Seconds to wait before retrying, or None to stop."""
    if attempt >= retry.attempts:
        return None
    if isinstance(outcome, httpx.Response):
        return retry.wait(attempt, outcome) if outcome.status_code == 503 else None
    retryable = isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout | httpx.RemoteProtocolError)
    return retry.wait(attempt, None) if retryable else None


def _url(base: httpx.URL, path: str) -> str:
    """The URL a call goes to, the base URL's path prefix kept (as httpx sends it)."""
    return str(base).rstrip("/") + path


def _finish(outcome: httpx.Response | Exception, url: str) -> httpx.Response:
    if isinstance(outcome, httpx.TimeoutException) and not isinstance(outcome, httpx.ConnectTimeout):
        raise TransportFailure(
            f"{url} did not answer within the timeout ({type(outcome).__name__}); a large batch may need a longer one",
            url=url,
        ) from outcome
    if isinstance(outcome, Exception):
        raise TransportFailure(f"no answer from {url}: {type(outcome).__name__}: {outcome}", url=url) from outcome
    if outcome.is_error:
        raise from_response(outcome)
    return outcome


class _Api:
    """Request building shared by both clients."""

    @staticmethod
    def denoise_call(images: Any, model: str | None, resize: bool, invert: bool, reinvert: bool) -> _Call:
        return _image_call("/denoise", images, model, resize, invert, reinvert)

    @staticmethod
    def encode_call(images: Any, model: str | None, resize: bool, invert: bool) -> _Call:
        call = _image_call("/encode", images, model, resize, invert)
        call.headers.pop("accept", None)
        return call

    @staticmethod
    def reconstruct_call(
        source: Any, model: str | None, resize: bool, invert: bool, reinvert: bool, kind: Kind
    ) -> _Call:
        if isinstance(source, dict):
            return _latents_call(source, model, reinvert, kind)
        return _image_call("/reconstruct", source, model, resize, invert, reinvert)


class Client(_Api):
    """Blocking client. Use as a context manager to reuse connections and close them at the end."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self._http = httpx.Client(
            base_url=url or default_url(), timeout=timeout, headers=_auth_headers(api_key), transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(call.method, call.path, **call.kwargs())
            except httpx.TransportError as exc:
                outcome = exc
            wait = _retry_wait(self.retry, attempt, outcome)
            if wait is None:
                return _finish(outcome, _url(self._http.base_url, call.path))
            time.sleep(wait)
            attempt += 1

    def denoise(
        self,
        images: Any,
        *,
        model: str | None = None,
        resize: bool = False,
        invert: bool = False,
        reinvert: bool = False,
        with_scores: bool = False,
    ) -> Any:
        """Denoise one image (path, bytes, PIL image or array) or a list of them in one request.

        ``invert`` for dark-on-light inputs; ``reinvert`` turns the (light-on-black) output back;
        ``with_scores`` returns a :class:`Scored` with each input's anomaly score and flag."""
        call = self.denoise_call(images, model, resize, invert, reinvert)
        return _images_from(self._send(call), call, with_scores)

    def encode(
        self, images: Any, *, model: str | None = None, resize: bool = False, invert: bool = False
    ) -> dict[str, Any]:
        """Latents of one image or a list: ``{"model", "version", "latent_shape", "latents", "anomaly_scores",
        "anomalous"}``."""
        return _json_from(self._send(self.encode_call(images, model, resize, invert)), "latents")

    def reconstruct(
        self,
        source: Any,
        *,
        model: str | None = None,
        resize: bool = False,
        invert: bool = False,
        reinvert: bool = False,
        kind: Kind = "bytes",
        with_scores: bool = False,
    ) -> Any:
        """Decode what :meth:`encode` returned (images as ``kind``), or encode-then-decode images
        (``with_scores``: as :meth:`denoise`)."""
        call = self.reconstruct_call(source, model, resize, invert, reinvert, kind)
        return _images_from(self._send(call), call, with_scores)

    def models(self) -> dict[str, Any]:
        return _json_from(self._send(_Call("GET", "/models")), "models")

    def health(self) -> dict[str, Any]:
        """Readiness; raises :class:`ServiceUnavailable` while the service is not ready."""
        return _json_from(self._send(_Call("GET", "/health/ready")), "status")


class AsyncClient(_Api):
    """The same API for asyncio: every method is a coroutine."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self._http = httpx.AsyncClient(
            base_url=url or default_url(), timeout=timeout, headers=_auth_headers(api_key), transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(call.method, call.path, **call.kwargs())
            except httpx.TransportError as exc:
                outcome = exc
            wait = _retry_wait(self.retry, attempt, outcome)
            if wait is None:
                return _finish(outcome, _url(self._http.base_url, call.path))
            await asyncio.sleep(wait)
            attempt += 1

    async def denoise(
        self,
        images: Any,
        *,
        model: str | None = None,
        resize: bool = False,
        invert: bool = False,
        reinvert: bool = False,
        with_scores: bool = False,
    ) -> Any:
        call = self.denoise_call(images, model, resize, invert, reinvert)
        return _images_from(await self._send(call), call, with_scores)

    async def encode(
        self, images: Any, *, model: str | None = None, resize: bool = False, invert: bool = False
    ) -> dict[str, Any]:
        return _json_from(await self._send(self.encode_call(images, model, resize, invert)), "latents")

    async def reconstruct(
        self,
        source: Any,
        *,
        model: str | None = None,
        resize: bool = False,
        invert: bool = False,
        reinvert: bool = False,
        kind: Kind = "bytes",
        with_scores: bool = False,
    ) -> Any:
        call = self.reconstruct_call(source, model, resize, invert, reinvert, kind)
        return _images_from(await self._send(call), call, with_scores)

    async def models(self) -> dict[str, Any]:
        return _json_from(await self._send(_Call("GET", "/models")), "models")

    async def health(self) -> dict[str, Any]:
        return _json_from(await self._send(_Call("GET", "/health/ready")), "status")


__all__ = ["AsyncClient", "Client", "Retry"]
