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
- A full queue refuses new work at once with :class:`~app.errors.Overloaded` (503).
- With no batching window (``max_delay == 0``, the default), when the batcher is idle (nothing
  queued, nothing running) and the caller is ``alone`` (the only request the worker has in
  progress), a small request runs at once on the
  event loop's own thread: there is nothing to merge it with, and handing it to an inference thread
  and back costs more latency than the run itself. The loop is held for at most
  ``INLINE_MAX_IMAGES`` images (well under a millisecond on a CPU core); anything that arrives
  meanwhile finds the batcher busy and queues as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.errors import Overloaded

log = logging.getLogger("denoise.batcher")

RETRY_AFTER_S = 1
#: The largest request an idle batcher runs on the event loop's thread instead of an inference thread.
INLINE_MAX_IMAGES = 2

#: What one call returns: one or more arrays whose first dimension is the batch.
Outputs = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class _Item:
    inputs: np.ndarray
    future: asyncio.Future[Outputs]


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
        self._running: set[asyncio.Task[None]] = set()
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

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, inputs: np.ndarray) -> Outputs:
        """Run ``inputs`` (a batch of one or more) and return the matching rows of every output."""
        if self._queue.qsize() >= self.queue_size:
            raise Overloaded(
                f"server busy: {self.queue_size} batches of work already queued for {self.name}; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if self._pending == 0 and len(inputs) <= INLINE_MAX_IMAGES and self.max_delay_s == 0 and self._alone():
            return self._call(inputs)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outputs]] = []
        for start in range(0, len(inputs), self.max_batch):
            futures.append(loop.create_future())
            self._queue.put_nowait(_Item(inputs[start : start + self.max_batch], futures[-1]))
            self._pending += 1
        if len(futures) == 1:
            return await futures[0]
        chunks = await asyncio.gather(*futures)
        return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))

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
            live = [item for item in items if not item.future.done()]  # callers that went away are skipped
            self._pending -= len(items) - len(live)
            if not live:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(live))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, live: list[_Item]) -> None:
        try:
            batch = live[0].inputs if len(live) == 1 else np.concatenate([item.inputs for item in live])
            try:
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._call, batch)
            except Exception as exc:  # noqa: BLE001 (_call logged it; every caller gets it)
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return
            offset = 0
            for item in live:
                count = len(item.inputs)
                if not item.future.done():
                    item.future.set_result(tuple(output[offset : offset + count] for output in outputs))
                offset += count
        finally:
            self._pending -= len(live)
            self._slots.release()
