"""CPU per part of reading a multipart batch of PNGs: the service's reader (app/multipart.py, the
``multipart`` library's push parser) against Starlette's ``request.form()`` (python-multipart, what a
FastAPI app gets from ``UploadFile``) and python-multipart's own callback parser with no spooling.

    python -m bench.multipart_readers [--parts 256] [--rounds 30]

The body is the one bench.run sends (256 copies of the sample PNG, each with its own filename), fed
in 64 KiB chunks as uvicorn hands it over; the best of ``--rounds`` is reported for each reader.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from python_multipart.multipart import MultipartParser, parse_options_header  # noqa: E402
from starlette.datastructures import Headers  # noqa: E402
from starlette.formparsers import MultiPartParser  # noqa: E402

from app.multipart import read_parts  # noqa: E402
from bench.load import multipart  # noqa: E402

CHUNK = 65536


async def _chunks(data: bytes) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


async def ours(data: bytes, content_type: str, parts: int) -> int:
    found = await read_parts(_chunks(data), content_type, field="file", max_files=parts, max_parts=parts + 16)
    return len(found)


async def starlette_form(data: bytes, content_type: str, parts: int) -> int:
    parser = MultiPartParser(Headers({"content-type": content_type}), _chunks(data), max_files=parts)
    form = await parser.parse()
    count = len(form.getlist("file"))
    await form.close()
    return count


async def python_multipart(data: bytes, content_type: str, parts: int) -> int:
    """python-multipart's parser with callbacks that keep each part's bytes in memory."""
    found: list[list[bytes]] = []

    def on_part_begin() -> None:
        found.append([])

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        found[-1].append(chunk[start:end])

    boundary = parse_options_header(content_type)[1][b"boundary"]
    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_part_data": on_part_data})
    async for chunk in _chunks(data):
        parser.write(chunk)
    parser.finalize()
    return len([b"".join(chunks) for chunks in found])


Reader = Callable[[bytes, str, int], Coroutine[Any, Any, int]]

READERS: dict[str, Reader] = {
    "ours (multipart's push parser)": ours,
    "Starlette's request.form()": starlette_form,
    "python-multipart, in memory": python_multipart,
}


def best_micros_per_part(reader: Reader, data: bytes, content_type: str, parts: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        count = asyncio.run(reader(data, content_type, parts))
        best = min(best, time.perf_counter() - started)
        if count != parts:
            raise SystemExit(f"{reader.__name__} read {count} parts of {parts}")
    return best * 1e6 / parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        body = Path(work) / "body"
        content_type = multipart(args.parts, body)
        data = body.read_bytes()
    print(f"{args.parts} PNG parts, {len(data)} bytes, best of {args.rounds} rounds, µs per part:")
    for name, reader in READERS.items():
        print(f"  {name:32s} {best_micros_per_part(reader, data, content_type, args.parts, args.rounds):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
