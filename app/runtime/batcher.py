"""Dynamic batching: requests queued together run as one ONNX Runtime call.

Every call to a graph goes through its :class:`Batcher`. The batcher takes
what is queued (waiting up to ``max_delay`` for more), concatenates it up to
``max_batch`` images (``merge=False`` turns merging off), runs it on an
inference thread so the event loop never blocks, and hands each caller its own
slice of every output (a graph and the anomaly scorer that reads the same
images run in one call, so they return two outputs).

- No ONNX Runtime call exceeds ``max_batch`` images: a larger request is queued
  as chunks of that size, whose activations stay in cache (at batch 256 one
  call is slower per image than four of 64) and whose shapes were warmed at
  start.
- Up to ``concurrency`` calls run at once, each on its own thread (ONNX Runtime
  releases the GIL), so one worker can use every core when the others are idle,
  as when a few clients' connections all land on one worker. While every slot
  is busy, new requests queue and merge into the next batch.
- A request produced a batch at a time (``submit_batches``: a large upload, decoded as it goes) has
  each batch running on an inference thread while the event loop decodes the next one.
- A full queue refuses new work at once with :class:`~app.errors.Overloaded` (503).
- A request's work is wanted :class:`Until` its deadline (``time.monotonic()``) passes or its client
  goes away: work whose deadline has passed when it is submitted, or by the time its batch is
  formed, is not run, and its caller gets :class:`~app.errors.DeadlineExceeded` (504); work whose
  client has gone (an HTTP connection closed, a gRPC call cancelled) is dropped the same way.
- Where tracing is on (:mod:`app.tracing`), the time a request's work waited in the queue is its
  span's ``denoise.queue_us``, and each ONNX Runtime call that merges the work of several requests
  an ``onnxruntime batch`` span linked to every request in it (those whose traces are recorded:
  sampled); the time of a call that runs one request's work alone is that request's
  ``denoise.onnxruntime_us``.
- With no batching window (``max_delay == 0``, the default), when the batcher is idle (nothing
  queued, nothing running) and the caller is ``alone`` (the only request the worker has in
  progress), a small request runs at once on the
  event loop's own thread: there is nothing to merge it with, and handing it to an inference thread
  and back costs more latency than the run itself. The loop is held for at most
  ``INLINE_MAX_IMAGES`` images (well under a millisecond on a CPU core); anything that arrives
  meanwhile finds the batcher busy and queues as usual.
- Before it decides that a request is alone, the batcher lets the loop run once. Under load, the
  server reads several requests in one turn of the loop, and their tasks start one after the other.
  A request that ran at once would be alone every time: the others have not started yet, so they
  are not counted. After one turn, each of them has reached the batcher. So they run as one batch
  (one ONNX Runtime call per batch costs much less CPU per image than one call per request), and
  the ONNX Runtime call leaves the loop free. The turn costs a lone request a few microseconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace

from app import tracing
from app.errors import ApiError, ClientGone, DeadlineExceeded, Overloaded

log = logging.getLogger("denoise.batcher")

RETRY_AFTER_S = 1
#: The largest request an idle batcher runs on the event loop's thread instead of an inference thread.
INLINE_MAX_IMAGES = 2

#: The span of an ONNX Runtime call that merges several requests, where tracing is on.
BATCH_SPAN = "onnxruntime batch"
#: The steps timed on a request's span (:class:`~app.tracing.Timed`): its wait in the queue, and the
#: ONNX Runtime calls that ran its work alone.
QUEUE_STEP, CALL_STEP = "queue", "onnxruntime"

#: What one call returns: one or more arrays whose first dimension is the batch.
Outputs = tuple[np.ndarray, ...]


def join(chunks: list[Outputs]) -> Outputs:
    """Consecutive chunks' outputs as one: every output's rows, in order."""
    return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))


def _stopped(inputs: np.ndarray) -> Outputs:
    raise RuntimeError("the batcher is stopped")


def never_gone() -> bool:
    """The client check of work whose client cannot go away."""
    return False


@dataclass(frozen=True)
class Until:
    """How long a request's work is wanted: until ``deadline`` (``time.monotonic()``; None for none)
    passes, and while ``gone()`` is false (its client is still there)."""

    deadline: float | None = None
    gone: Callable[[], bool] = never_gone

    def expired(self) -> ApiError | None:
        """Why the work is no longer wanted (the error for its caller), or None while it is."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return DeadlineExceeded("the request's deadline passed before it could run; it was not run")
        if self.gone():
            return ClientGone("the client went away before its request ran; it was not run")
        return None

    def check(self) -> None:
        """Raise the reason the work is no longer wanted, if it is not."""
        if (error := self.expired()) is not None:
            raise error


#: Work wanted until it is done.
ALWAYS = Until()


@dataclass(frozen=True)
class _Item:
    inputs: np.ndarray
    future: asyncio.Future[Outputs]
    until: Until
    #: The request's trace context and when the work was queued (``time.perf_counter_ns()``), where
    #: tracing is on.
    trace: otel_context.Context | None = None
    queued_ns: int = 0


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], Outputs],
        *,
        name: str,
        max_batch: int,
        max_delay_s: float,
        queue_size: int,
        merge: bool = True,
        concurrency: int = 1,
        on_batch: Callable[[int], None] = lambda size: None,
        alone: Callable[[], bool] = lambda: False,
    ) -> None:
        self._infer = run
        self.name = name
        self.max_batch = max_batch
        self.merge = merge
        self.max_delay_s = max_delay_s
        self.queue_size = queue_size
        self._on_batch = on_batch
        self._alone = alone
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._slots = asyncio.Semaphore(concurrency)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"infer-{name}")
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Future[Outputs]] = set()
        #: Items queued or running; zero means the batcher is idle.
        self._pending = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Finish what is queued and running, then stop the loop and the inference threads."""
        while not self._queue.empty():
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)
        # Let go of the graph (and its session) now: the finished task's frame and this batcher refer to
        # each other, and such a pair waits for the garbage collector.
        self._task = None
        self._infer = _stopped

    @property
    def depth(self) -> int:
        """Batches of work waiting (a request, or a chunk of a larger one)."""
        return self._queue.qsize()

    @property
    def pending(self) -> int:
        """Batches of work waiting or running."""
        return self._pending

    async def submit(self, inputs: np.ndarray, until: Until = ALWAYS) -> Outputs:
        """Run ``inputs`` (a batch of one or more) and return the matching rows of every output."""
        inline = self._pending == 0 and len(inputs) <= INLINE_MAX_IMAGES and self.max_delay_s == 0
        if inline:
            # Requests read in the same turn of the loop as this one, ready to run but not yet started,
            # reach the batcher first: then this one is not alone, and they all run as one batch.
            await asyncio.sleep(0)
        until.check()
        self._check_room()
        if inline and self._pending == 0 and self._alone():
            with tracing.timed(CALL_STEP):
                return self._call(inputs)
        futures = [
            self._enqueue(inputs[start : start + self.max_batch], until)
            for start in range(0, len(inputs), self.max_batch)
        ]
        if len(futures) == 1:
            return await futures[0]
        return join(await asyncio.gather(*futures))

    async def submit_batches(self, batches: AsyncIterator[np.ndarray], until: Until = ALWAYS) -> Outputs:
        """Run a large request produced a batch (at most ``max_batch`` images) at a time; its outputs, in order.

        Each batch is queued as soon as it is produced and, with a free inference thread, starts
        running at the next turn of the event loop, while the caller produces the next one (decodes
        its PNGs, on the loop). If producing fails, the batches not yet run are withdrawn and the
        error is raised.
        """
        futures: list[asyncio.Future[Outputs]] = []
        try:
            async for batch in batches:
                if len(batch) > self.max_batch:
                    raise ValueError(f"a batch of {len(batch)} images is more than max_batch {self.max_batch}")
                until.check()
                self._check_room()
                futures.append(self._enqueue(batch, until))
                await asyncio.sleep(0)  # the turn of the loop in which _serve starts it
            return join([await future for future in futures])
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def _check_room(self) -> None:
        if self._queue.qsize() >= self.queue_size:
            raise Overloaded(
                f"server busy: {self.queue_size} batches of work already queued for {self.name}; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    def _enqueue(self, inputs: np.ndarray, until: Until) -> asyncio.Future[Outputs]:
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        if tracing.recording():
            item = _Item(inputs, future, until, otel_context.get_current(), time.perf_counter_ns())
        else:
            item = _Item(inputs, future, until)
        self._queue.put_nowait(item)
        self._pending += 1
        return future

    def _call(self, batch: np.ndarray) -> Outputs:
        """One inference call, on the loop's thread or an inference thread: counted, or its failure logged."""
        try:
            outputs = self._infer(batch)
        except Exception:
            log.exception("inference failed for %s (batch of %d)", self.name, len(batch))
            raise
        self._on_batch(len(batch))
        return outputs

    async def _collect(self, first: _Item) -> tuple[list[_Item], _Item | None]:
        """Gather queued items behind ``first`` up to ``max_batch`` images; return any overflow."""
        items, size = [first], len(first.inputs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay_s
        while self.merge and size < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if size + len(item.inputs) > self.max_batch:
                return items, item
            items.append(item)
            size += len(item.inputs)
        return items, None

    async def _serve(self) -> None:
        carried: _Item | None = None
        while True:
            await self._slots.acquire()
            first = carried or await self._queue.get()
            items, carried = await self._collect(first)
            for item in items:
                if not item.future.done() and (error := item.until.expired()) is not None:
                    item.future.set_exception(error)
            live = [item for item in items if not item.future.done()]  # no longer wanted, or cancelled
            self._pending -= len(items) - len(live)
            if not live:
                self._slots.release()
                continue
            batch = live[0].inputs if len(live) == 1 else np.concatenate([item.inputs for item in live])
            # Submitted now, not a turn of the loop later: a caller producing its next batch (see
            # ``submit_batches``) holds the loop meanwhile.
            running = asyncio.get_running_loop().run_in_executor(self._executor, self._call, batch)
            self._running.add(running)
            span = self._trace(live, len(batch))
            running.add_done_callback(functools.partial(self._done, live, span))

    def _trace(self, live: list[_Item], size: int) -> trace.Span | tracing.Timed | None:
        """Note each recorded request's wait in the queue; start timing the batch: where it holds one
        request's work alone, on that request's span, else as a span linked to every recorded request
        in it and under the first (None when no request in it is recorded)."""
        tracer = tracing.tracer()
        if tracer is None:
            return None
        links, parent, first = [], None, None
        for item in live:
            if item.trace is None:  # not recorded
                continue
            request = trace.get_current_span(item.trace)
            tracing.Timed(request, QUEUE_STEP, item.queued_ns).end()
            links.append(trace.Link(request.get_span_context()))
            if parent is None:
                parent, first = item.trace, request
        if parent is None or first is None:
            return None
        if len(live) == 1:  # its size is the request's images (on the request's span)
            return tracing.Timed(first, CALL_STEP)
        attributes: dict[str, str | int] = {
            "denoise.batcher": self.name,
            "denoise.batch_size": size,
            "denoise.requests": len(live),
        }
        return tracer.start_span(BATCH_SPAN, context=parent, links=links, attributes=attributes)

    def _done(
        self, live: list[_Item], span: trace.Span | tracing.Timed | None, running: asyncio.Future[Outputs]
    ) -> None:
        """Hand each caller its rows of every output, or the error; free the slot."""
        error = None if running.cancelled() else running.exception()
        if isinstance(span, tracing.Timed):
            span.end(error)
        elif span is not None:
            if error is not None:
                span.set_status(trace.StatusCode.ERROR, str(error))
            span.end()
        self._running.discard(running)
        self._pending -= len(live)
        self._slots.release()
        offset = 0
        for item in live:
            rows = slice(offset, offset + len(item.inputs))
            offset = rows.stop
            if item.future.done():  # the caller went away
                continue
            if running.cancelled():
                item.future.cancel()
            elif error is not None:  # _call logged it; every caller gets it
                item.future.set_exception(error)
            else:
                item.future.set_result(tuple(output[rows] for output in running.result()))
