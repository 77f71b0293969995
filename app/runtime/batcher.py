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
    ) -> None:
        self._infer = run
        self.name = name
        self.max_batch = max_batch
        self.merge = merge
        self.max_delay_s = max_delay_s
        self.queue_size = queue_size
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._slots = asyncio.Semaphore(concurrency)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"infer-{name}")
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

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
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outputs]] = []
        for start in range(0, len(inputs), self.max_batch):
            futures.append(loop.create_future())
            self._queue.put_nowait(_Item(inputs[start : start + self.max_batch], futures[-1]))
        if len(futures) == 1:
            return await futures[0]
        chunks = await asyncio.gather(*futures)
        return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))

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
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, batch)
            except Exception as exc:
                log.exception("inference failed for %s (batch of %d)", self.name, len(batch))
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return
            self._on_batch(len(batch))
            offset = 0
            for item in live:
                count = len(item.inputs)
                if not item.future.done():
                    item.future.set_result(tuple(output[offset : offset + count] for output in outputs))
                offset += count
        finally:
            self._slots.release()
