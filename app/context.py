"""What every request needs, whichever front door it came by (own REST, V2 REST, V2 gRPC).

:class:`RequestContext` is one request: its id, the key decision and the admission slot its route's
:class:`~app.policy.Policy` asks for, its deadline, whether its client is still there, what it was
about (endpoint, model, images), and at the end its metrics, its access-log line (with its trace id
where tracing is on) and its span's attributes. The front
doors create it (:mod:`app.middleware` for HTTP, :mod:`app.v2.grpc`'s interceptor) and fill it;
nothing else records a request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

from app import tracing
from app.auth import ApiKeys
from app.errors import Overloaded
from app.metrics import Metrics
from app.policy import Policy
from app.runtime.batcher import Until, never_gone

access_log = logging.getLogger("denoise.access")
#: Seconds between two looks at the requests a model swap waits for.
DRAIN_POLL_S = 0.01
#: How each protocol says a request's deadline passed.
EXPIRED = (504, "DEADLINE_EXCEEDED")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# New request ids: a random per-process prefix and a counter (uuid4 costs a syscall per request).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def request_id(supplied: str) -> str:
    """The caller's request id if it is valid (1-64 of ``A-Za-z0-9._-``), else a new one."""
    return supplied if _VALID_REQUEST_ID.match(supplied) else f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class WorkInProgress:
    """Inference requests in progress in this worker, whichever front door they came by.

    Requests are counted by the epoch they were admitted in, so that a model swap can wait for the
    requests that may hold the model it replaced (:meth:`drained`).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._epoch = 0
        self._by_epoch: dict[int, int] = {}

    @property
    def count(self) -> int:
        return self._count

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``limit`` slots for the block; :class:`Overloaded` (503) when none is free."""
        if self._count >= self.limit:
            raise Overloaded(
                f"server busy: {self._count} requests in progress (DENOISE_MAX_INFLIGHT); retry shortly",
                # Shedding load: the connection goes too, so that a flood of clients pays for reconnecting.
                headers={"Retry-After": "1", "Connection": "close"},
            )
        epoch = self._epoch
        self._count += 1
        self._by_epoch[epoch] = self._by_epoch.get(epoch, 0) + 1
        try:
            yield
        finally:
            self._count -= 1
            left = self._by_epoch[epoch] - 1
            if left:
                self._by_epoch[epoch] = left
            else:
                del self._by_epoch[epoch]

    async def drained(self, timeout: float) -> bool:
        """Wait until every request admitted before this call has finished (those admitted after do not
        count), at most ``timeout`` seconds; whether they all did."""
        before = self._epoch
        self._epoch += 1
        deadline = time.monotonic() + timeout
        while any(epoch <= before for epoch in self._by_epoch):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(DRAIN_POLL_S)
        return True


@dataclass(frozen=True)
class Services:
    """The parts of the service every request uses."""

    metrics: Metrics
    keys: ApiKeys
    work: WorkInProgress


@dataclass
class RequestContext:
    services: Services
    #: ``rest`` (our API), ``v2`` (the Open Inference Protocol over HTTP) or ``grpc``.
    protocol: str
    request_id: str
    method: str
    path: str
    query: str = ""
    client: str = "-"
    #: The route template (or gRPC method) that served it; ``other`` where none matched.
    endpoint: str = "other"
    model: str = "-"
    #: The version of the model that served the request.
    version: str = "-"
    images: int = 0
    #: ``time.monotonic()`` by which the caller wants its answer; None for no deadline. Work for a
    #: request whose deadline has passed is not started (504, ``DEADLINE_EXCEEDED``).
    deadline: float | None = None
    #: ``time.monotonic()`` when the request arrived (deadlines count from it).
    received: float = field(default_factory=time.monotonic)
    #: True once the client has gone away (its connection closed, its call cancelled): work not yet
    #: started for it is dropped.
    gone: Callable[[], bool] = never_gone
    started: float = field(default_factory=time.perf_counter)

    def until(self) -> Until:
        """How long the request's work is wanted: until its deadline, while its client is there."""
        return Until(self.deadline, self.gone)

    def admit(self, policy: Policy, endpoint: str, authorization: str | None) -> AbstractContextManager[None]:
        """Apply ``policy``: the key decision now (:class:`~app.errors.Unauthorized`), and the admission
        slot to hold while the request runs where it is limited."""
        self.endpoint = endpoint
        if self.services.keys.required(policy.access):
            self.services.keys.check(authorization, policy.access)
        return self.services.work.slot() if policy.limited else nullcontext()

    def describe_span(self) -> None:
        """Put the request's id, model and image count on its span, where tracing is on and the span is
        still recording (an HTTP request's span ends with its response's last byte)."""
        tracing.annotate(request_id=self.request_id, model=self.model, images=self.images)

    def finish(self, status: int | str, error: bool = False) -> None:
        """The request's metrics and its access-log line. HTTP statuses of 400 and above are errors;
        other protocols say so with ``error``."""
        seconds = time.perf_counter() - self.started
        self.services.metrics.observe_request(self.endpoint, self.model, status, seconds, self.protocol, error)
        if status in EXPIRED:
            self.services.metrics.deadline_expired.labels(self.protocol).inc()
        self.describe_span()
        trace_id = tracing.trace_id()
        if access_log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": self.request_id,
                "protocol": self.protocol,
                "method": self.method,
                "path": self.path,
                "query": self.query,
                "endpoint": self.endpoint,
                "status": status,
                "model": self.model,
                "version": self.version,
                "images": self.images,
                "duration_ms": round(seconds * 1000, 3),
                "client": self.client,
            }
            if trace_id is not None:
                fields["trace_id"] = trace_id
            access_log.info(
                "%s %s %s model=%s images=%d %.1f ms request_id=%s",
                self.method,
                self.path,
                status,
                self.model,
                self.images,
                fields["duration_ms"],
                self.request_id,
                extra=fields,
            )
