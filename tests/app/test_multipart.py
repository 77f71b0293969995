"""The multipart reader: parts in order across any chunking, and each limit refused with a 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from app.errors import ApiError, PayloadTooLarge
from app.multipart import Part, read_parts


def _body(files: Sequence[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart body built by httpx: (field name, filename or None for a text field, content)."""
    upload = [(name, (filename, content, "image/png")) for name, filename, content in files if filename]
    data = {name: content.decode() for name, filename, content in files if filename is None}
    request = httpx.Request("POST", "http://x/", files=upload, data=data)
    return request.read(), request.headers["content-type"]


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _read(body: bytes, content_type: str, chunk: int = 65536, max_files: int = 8, max_parts: int = 12) -> list[Part]:
    return asyncio.run(
        read_parts(_chunks(body, chunk), content_type, field="file", max_files=max_files, max_parts=max_parts)
    )


@pytest.mark.parametrize("chunk", [1, 7, 100, 65536])
def test_parts_in_order_whatever_the_chunking(chunk: int) -> None:
    contents = [bytes([i]) * (50 + i) + b"\r\n--not-a-boundary\r\n" for i in range(4)]
    body, content_type = _body([("file", f"{i}.png", c) for i, c in enumerate(contents)] + [("other", "x", b"skip")])
    parts = _read(body, content_type, chunk)
    assert [p.data for p in parts] == contents
    assert all(p.is_file for p in parts)


def test_text_field_named_file_is_kept_as_text() -> None:
    body, content_type = _body([("note", None, b"hello"), ("file", None, b"text"), ("other", "o.png", b"o")])
    (part,) = _read(body, content_type)
    assert not part.is_file
    assert part.data == b"text"


def _refused(body: bytes, content_type: str, **limits: int) -> str:
    with pytest.raises(ApiError) as raised:
        _read(body, content_type, **limits)
    return raised.value.message


def test_too_many_files() -> None:
    body, content_type = _body([("file", f"{i}.png", b"x") for i in range(3)])
    with pytest.raises(PayloadTooLarge, match="Too many files"):
        _read(body, content_type, max_files=2)


def test_too_many_parts() -> None:
    body, content_type = _body([(f"f{i}", f"{i}.png", b"x") for i in range(5)])
    assert "Too many fields" in _refused(body, content_type, max_parts=4)


def test_oversized_part_headers() -> None:
    body, content_type = _body([("f" * 5000, "a.png", b"x")])
    assert "Maximum segment header length exceeded" in _refused(body, content_type)


def test_truncated_body() -> None:
    body, content_type = _body([("file", "a.png", b"x" * 100)])
    assert "closing boundary" in _refused(body[:-20], content_type)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"abc", "multipart/form-data", "no boundary"),
        (b"garbage that is not multipart", "multipart/form-data; boundary=xyz", "malformed multipart body"),
    ],
)
def test_malformed(body: bytes, content_type: str, message: str) -> None:
    assert message in _refused(body, content_type)


def _raw(*parts: bytes) -> tuple[bytes, str]:
    body = b"".join(b"--b0undary\r\n" + part + b"\r\n" for part in parts) + b"--b0undary--\r\n"
    return body, "multipart/form-data; boundary=b0undary"


def test_too_many_headers_in_a_part() -> None:
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(8))
    body, content_type = _raw(b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n' + headers + b"\r\nx")
    assert "Maximum segment header count exceeded" in _refused(body, content_type)


def test_part_without_content_disposition() -> None:
    body, content_type = _raw(b"Content-Type: image/png\r\n\r\nx")
    assert "Missing Content-Disposition" in _refused(body, content_type)


def test_empty_filename_is_still_a_file_and_quoted_names_are_unquoted() -> None:
    body, content_type = _raw(
        b'Content-Disposition: form-data; name="file"; filename=""\r\n\r\nfirst',
        b'Content-Disposition: form-data; name="file"; filename="a \\"b\\".png"\r\n\r\nsecond',
    )
    parts = _read(body, content_type)
    assert [(p.is_file, p.data) for p in parts] == [(True, b"first"), (True, b"second")]


def test_bytes_after_the_closing_boundary_are_ignored() -> None:
    body, content_type = _body([("file", "a.png", b"x")])
    (part,) = _read(body + b"epilogue", content_type)
    assert part.data == b"x"
