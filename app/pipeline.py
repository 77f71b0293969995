"""The image pipeline every front door runs: decode, batch, infer, encode.

Protocol-neutral: the own REST API and the Open Inference Protocol (REST and gRPC) hand it the
uploaded image bytes and get the graph's outputs back, and hand it output pixels to PNG-encode.
Work that takes long runs off the event loop or between its turns, so that the loop keeps
answering probes and handing inference threads their next batches:

- uploads to resize are decoded in a worker thread when what they declare (their pixels, read from
  the PNG header; any other format counts as large) passes :data:`THREAD_DECODE_PIXELS`: a few
  hundred bytes of PNG can declare millions of pixels, so bytes on the wire do not tell;
- a request larger than one batch is decoded a batch at a time, each batch running on an inference
  thread while the next is decoded;
- many outputs are PNG-encoded :data:`ENCODE_SLICE` at a time, between turns of the loop.

Where tracing is on, decoding and encoding are timed on the request's span (:func:`app.tracing.step`):
as ``decode`` and ``encode`` spans over several images, as ``denoise.decode_us`` and
``denoise.encode_us`` for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
from starlette.concurrency import run_in_threadpool

from app import tracing
from app.config import Settings
from app.imaging import DecodeOptions, declared_pixels, decode, encode_png, to_model_input, to_pixels
from app.runtime.batcher import ALWAYS, Until
from app.runtime.model import Inference, LoadedModel
from denoise_bundle.manifest import GraphName

#: Declared pixels of uploads to resize above which decoding moves to a worker thread (about 5 ms of
#: decoding and resampling; small images decode in microseconds, less than the hand-over costs).
THREAD_DECODE_PIXELS = 1_000_000
#: Images PNG-encoded between two turns of the event loop (about 2 ms of work).
ENCODE_SLICE = 64


def decode_options(settings: Settings, *, resize: bool, invert: bool) -> DecodeOptions:
    """How uploads are decoded: the formats and size allowed by ``settings``, and the request's options."""
    return DecodeOptions(
        formats=settings.image_format_list, max_pixels=settings.max_image_pixels, resize=resize, invert=invert
    )


async def decode_images(
    uploads: Sequence[bytes], options: DecodeOptions, *, offset: int = 0, numbered: bool | None = None
) -> np.ndarray:
    """Decode uploads by the normalisation rule into a (n, 28, 28) uint8 batch.

    ``uploads`` may be a slice of a request's uploads starting at ``offset``: an error names the
    image's index in the request (``numbered``, by default when there are several).
    """
    if numbered is None:
        numbered = len(uploads) > 1

    def run() -> np.ndarray:
        images = [decode(data, options, offset + index if numbered else None) for index, data in enumerate(uploads)]
        return images[0][np.newaxis] if len(images) == 1 else np.stack(images)  # a view: np.stack copies

    with tracing.step("decode", len(uploads)):
        if options.resize and _decode_cost(uploads) > THREAD_DECODE_PIXELS:
            return await run_in_threadpool(run)
        return run()


def _decode_cost(uploads: Sequence[bytes]) -> int:
    """The pixels decoding ``uploads`` will touch, by their headers; an upload that declares none counts as
    over the threshold (decoding it may cost anything)."""
    total = 0
    for data in uploads:
        pixels = declared_pixels(data)
        total += THREAD_DECODE_PIXELS + 1 if pixels is None else pixels
        if total > THREAD_DECODE_PIXELS:
            break
    return total


async def infer_images(
    model: LoadedModel,
    graph: GraphName,
    uploads: Sequence[bytes],
    options: DecodeOptions,
    until: Until = ALWAYS,
) -> Inference:
    """Decode ``uploads`` and run ``graph`` on them, a batch at a time when there are more than one
    batch holds, each batch running while the next is decoded; nothing is decoded or run once the
    work is no longer wanted (``until``: its deadline passed, its client went away)."""
    until.check()
    size = model.batch_size(graph)
    if len(uploads) <= size:
        return await model.infer(graph, to_model_input(await decode_images(uploads, options)), until)

    async def batches() -> AsyncIterator[np.ndarray]:
        for offset in range(0, len(uploads), size):
            part = uploads[offset : offset + size]
            yield to_model_input(await decode_images(part, options, offset=offset, numbered=True))

    return await model.infer_batches(graph, batches(), until)


async def output_pngs(outputs: np.ndarray, reinvert: bool) -> list[bytes]:
    """A graph's images (float (n, 28, 28, 1) in [0, 1]) as PNGs, light on black or, with ``reinvert``,
    inverted back to dark on light: the one output encoding of every front door."""
    pixels = to_pixels(outputs)
    return await encode_pngs(255 - pixels if reinvert else pixels)


async def encode_pngs(pixels: np.ndarray) -> list[bytes]:
    """PNG-encode (n, 28, 28) uint8 images, yielding the event loop between slices."""
    images: list[bytes] = []
    with tracing.step("encode", len(pixels)):
        for start in range(0, len(pixels), ENCODE_SLICE):
            if start:
                await asyncio.sleep(0)
            images.extend(encode_png(p) for p in pixels[start : start + ENCODE_SLICE])
    return images
