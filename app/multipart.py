"""Multipart ``file`` fields, read straight into memory with the ``multipart`` library's push parser.

Starlette's form parser (python-multipart underneath) spools every part into a
``SpooledTemporaryFile`` behind an async ``UploadFile`` and walks each part's headers a byte at a
time in Python; ``multipart.PushMultipartParser`` finds boundaries and header lines with
``bytes.find``, at a quarter of that cost per part on a batch of small PNGs (``python -m
bench.multipart_readers`` measures the three). The body is already bounded by the size limit
(:mod:`app.middleware`), so the parts are kept as bytes.

Limits, each refused naming it: at most ``max_files`` file uploads named ``field`` (413, the batch
limit every front door shares) and ``max_parts`` parts in all (400); the parser's own limits on each
part's headers (at most 8, each at most 4,224 bytes); every part must say its
``Content-Disposition``; the body must end with its closing boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import multipart

from app.errors import BadRequestBody, PayloadTooLarge

#: The limits on each part's headers (the parser's defaults, set here as the API promises them: docs/api.md).
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096 + 128


@dataclass
class Part:
    """One part named ``field``: a file upload, or a text field when it has no filename."""

    is_file: bool
    chunks: list[bytes] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)  # one chunk: that chunk itself, not a copy


class _Collector:
    """Keeps the parts named ``field`` from the parser's events and enforces the part limits."""

    def __init__(self, field: str, max_files: int, max_parts: int) -> None:
        self.field = field
        self.max_files = max_files
        self.max_parts = max_parts
        self.parts: list[Part] = []
        self._count = 0
        self._files = 0
        self._current: list[bytes] | None = None

    def segment(self, segment: multipart.MultipartSegment) -> None:
        self._count += 1
        if self._count > self.max_parts:
            raise BadRequestBody(f"Too many fields: a multipart body may hold at most {self.max_parts} parts")
        if segment.name != self.field:
            self._current = None  # another field: read past it
            return
        part = Part(is_file=segment.filename is not None)
        if part.is_file:
            if self._files >= self.max_files:
                raise PayloadTooLarge(
                    f"Too many files: at most {self.max_files} images per request (DENOISE_MAX_BATCH_IMAGES); split it"
                )
            self._files += 1
        self.parts.append(part)
        self._current = part.chunks

    def feed(self, parser: multipart.PushMultipartParser, chunk: bytes) -> None:
        for event in parser.parse(chunk):
            if isinstance(event, bytes):
                if self._current is not None:
                    self._current.append(event)
            elif event is not None:
                self.segment(event)


def boundary_of(content_type: str) -> str:
    """The boundary a ``multipart/form-data`` Content-Type names; a 400 when it names none."""
    _, params = multipart.parse_options_header(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise BadRequestBody("malformed multipart body: the Content-Type has no boundary")
    return str(boundary)


async def read_parts(
    body: AsyncIterator[bytes], content_type: str, *, field: str, max_files: int, max_parts: int
) -> list[Part]:
    """The parts named ``field`` of a ``multipart/form-data`` body, in order."""
    collector = _Collector(field, max_files, max_parts)
    boundary = boundary_of(content_type)
    try:
        parser = multipart.PushMultipartParser(
            boundary, max_header_size=MAX_PART_HEADER_BYTES, max_header_count=MAX_PART_HEADERS
        )
        async for chunk in body:
            if chunk:  # an empty chunk would end the parse
                collector.feed(parser, chunk)
    except multipart.MultipartError as exc:
        raise BadRequestBody(f"malformed multipart body: {exc}") from exc
    try:
        parser.close()
    except multipart.ParserError as exc:
        raise BadRequestBody("malformed multipart body: it ends before its closing boundary") from exc
    return collector.parts
