"""The JSON bodies that carry tensors, read and written by orjson: ``/encode``'s latents,
``/denoise``'s batch of base64 PNGs, and V2's requests and responses with tensors as JSON ``data``
(``/reconstruct``'s latents are read by pydantic's own JSON parser, :mod:`app.latents`).

These bodies are where JSON costs: the standard library's ``json`` spends about 0.5 µs on each
float it writes, so one image's 784 V2 output floats took longer to write than the model took to
compute them. orjson writes a numpy array as it is (no ``tolist()``) and reads and writes at about a
tenth of that cost (``python -m bench.cpu --request encode`` or ``--request v2-json`` measures the
requests, ``--before REV`` against another commit).

A float32 value is written in its own shortest form (``0.85062426``, not the 17 digits of the float64
it widens to): read back as float32 it is the same value, which is what every V2 client does with
FP32 data and what ``/reconstruct`` does with latents.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

#: numpy arrays and scalars written as JSON arrays and numbers.
OPTIONS = orjson.OPT_SERIALIZE_NUMPY

#: What a body that is not JSON raises (a ``ValueError``, naming where the text went wrong).
JSONDecodeError = orjson.JSONDecodeError


def dumps(content: Any) -> bytes:
    """``content`` (with numpy arrays in it, C-contiguous) as compact JSON."""
    return orjson.dumps(content, option=OPTIONS)


def loads(body: bytes | str) -> Any:
    """A JSON text; :data:`JSONDecodeError` where it is not one (nesting deeper than 1,024 included)."""
    return orjson.loads(body)


class JSONBody(JSONResponse):
    """A JSON response written by :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
