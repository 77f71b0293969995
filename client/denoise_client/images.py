"""Converting what callers hold (paths, bytes, PIL images, numpy arrays) to PNG bytes and back."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Literal

from PIL import Image

Kind = Literal["bytes", "pil", "numpy"]


def to_png(image: Any) -> tuple[bytes, Kind]:
    """PNG bytes for ``image`` and the kind to answer in (paths and bytes get bytes back)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), "bytes"
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes(), "bytes"
    if isinstance(image, Image.Image):
        return _save(image), "pil"
    if type(image).__module__ == "numpy":
        import numpy as np

        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        return _save(Image.fromarray(array.squeeze())), "numpy"
    raise TypeError(f"cannot send {type(image).__name__}: give a path, bytes, a PIL image or a numpy array")


def _save(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def from_png(data: bytes, kind: Kind) -> Any:
    """PNG bytes as ``kind``: bytes, a PIL image, or a (28, 28) uint8 numpy array."""
    if kind == "bytes":
        return data
    image = Image.open(io.BytesIO(data))
    image.load()
    if kind == "pil":
        return image
    import numpy as np

    return np.asarray(image)
