"""Image decoding, validation and encoding: the only module that reads or writes images.

The common upload (a 28x28 8-bit grayscale PNG) and every output are decoded and encoded by libpng
through imagecodecs, at a fifth (decoding) to a quarter (encoding) of what Pillow costs on an image
this small; every other upload (other modes, sizes and formats, animated or damaged files) goes
through Pillow, which applies the rule below and says what is wrong with a file it refuses.

Every upload is normalised by :data:`NORMALISATION`, which the API documentation shows as it is.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image, UnidentifiedImageError

from app.errors import InvalidInput, PayloadTooLarge, UndecodableImage, UnsupportedMediaType
from denoise_bundle import IMAGE_SHAPE

NORMALISATION = """\
Every uploaded image goes through these steps before the model sees it:

1. It must be a PNG (other formats only where the operator allow-listed them) holding exactly
   one frame.
2. Its size is read from the header before any pixel is decoded: it must be 28x28, unless
   `resize=true` is asked for, in which case it may hold at most the configured pixel limit.
3. Modes become 8-bit grayscale: L and 1 as they are; 16-bit grayscale scaled by 255/65535;
   RGB by ITU-R 601-2 luma (`L = 0.299 R + 0.587 G + 0.114 B`); images with an alpha channel
   (LA, RGBA, PA, and palette images with transparency) are composited over black, so
   transparent pixels count as background.
4. With `resize=true`, the grayscale image is resampled to 28x28 with a Lanczos filter.
5. With `invert=true`, every pixel `v` becomes `255 - v`: the models learned light shapes on a
   black background, so send dark-on-light scans with `invert=true`. Outputs are always light on
   black; add `reinvert=true` to have them inverted back to dark on light.
"""

SIZE = IMAGE_SHAPE[:2]
# Pillow's own bomb guard is a backstop; our limit is checked first, from the header.
Image.MAX_IMAGE_PIXELS = 64_000_000


@dataclass(frozen=True)
class DecodeOptions:
    formats: tuple[str, ...] = ("PNG",)
    max_pixels: int = 4_000_000
    resize: bool = False
    invert: bool = False


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def declared_pixels(data: bytes) -> int | None:
    """The pixels a PNG declares in its header (what decoding it will cost), read without Pillow; None for
    anything else (another format, a truncated header)."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width) * int(height)


#: The header fields of the upload nearly every client sends: 28x28, 8-bit grayscale (IHDR's width,
#: height, bit depth and colour type).
_GRAY_28 = struct.pack(">IIBB", SIZE[1], SIZE[0], 8, 0)


def _decode_gray(data: bytes) -> np.ndarray | None:
    """A 28x28 8-bit grayscale PNG of one frame decoded by libpng (imagecodecs), at a fifth of Pillow's
    decoding cost; None for any other upload, or one libpng fails on, which Pillow then decodes or explains."""
    if data[16:26] != _GRAY_28 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or b"acTL" in data:
        return None  # another size, mode or format, or an animated PNG (acTL), which Pillow rejects
    try:
        pixels = imagecodecs.png_decode(data)
    except Exception:  # noqa: BLE001 - Pillow says what is wrong with it
        return None
    return pixels if pixels.shape == SIZE and pixels.dtype == np.uint8 else None


def _sniff_format(data: bytes) -> str | None:
    """The format Pillow recognises in ``data`` (reading only the header), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as probe:
                return probe.format
    except Exception:  # noqa: BLE001 - any failure means "not an image we know"
        return None


def _open(data: bytes, options: DecodeOptions, index: int | None) -> Image.Image:
    accepted = ", ".join(options.formats)
    if not data:
        raise UndecodableImage(f"empty image; send a {accepted} file", index=index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=list(options.formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image declares too many pixels: {exc}", index=index) from exc
    except Exception as exc:
        if isinstance(exc, UnidentifiedImageError):
            found = _sniff_format(data)
            if found is not None:
                raise UnsupportedMediaType(f"image is {found}; accepted formats: {accepted}", index=index) from exc
            raise UndecodableImage(f"body is not a {accepted} image (unrecognised header)", index=index) from exc
        raise UndecodableImage(f"not a decodable {accepted} image: {exc}", index=index) from exc


def _to_gray(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        wide = np.asarray(image, dtype=np.int64)
        return Image.fromarray(((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8), "L")
    if image.mode in ("LA", "PA", "RGBA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        luma = np.asarray(rgba.convert("L"), dtype=np.uint16)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint16)
        return Image.fromarray(((luma * alpha + 127) // 255).astype(np.uint8), "L")
    return image if image.mode == "L" else image.convert("L")


def decode(data: bytes, options: DecodeOptions, index: int | None = None) -> np.ndarray:
    """Validate and decode one upload into a (28, 28) uint8 array, by the module's rule."""
    pixels = _decode_gray(data) if "PNG" in options.formats else None
    if pixels is not None:
        return 255 - pixels if options.invert else pixels
    with _open(data, options, index) as image:
        width, height = image.size
        frames = getattr(image, "n_frames", 1)
        if frames != 1:
            raise InvalidInput(f"animated image with {frames} frames; send a single-frame image", index=index)
        if (height, width) != SIZE:
            if not options.resize:
                raise InvalidInput(
                    f"image is {width}x{height}; send {SIZE[1]}x{SIZE[0]} or add ?resize=true", index=index
                )
            if width * height > options.max_pixels:
                raise PayloadTooLarge(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {options.max_pixels}",
                    index=index,
                )
        try:
            image.load()
            gray = _to_gray(image)
            if options.resize and gray.size != (SIZE[1], SIZE[0]):
                gray = gray.resize((SIZE[1], SIZE[0]), Image.Resampling.LANCZOS)
            pixels = np.asarray(gray, dtype=np.uint8)
        except Exception as exc:
            raise UndecodableImage(f"image data is corrupt: {exc}", index=index) from exc
    return 255 - pixels if options.invert else pixels


#: zlib's fastest level with run-length matching and no row filter: on a denoised 28x28 digit (a dark
#: background around smooth strokes), 30% faster than libpng's defaults at level 1 and a little smaller.
_PNG_ENCODING = {"level": 1, "strategy": imagecodecs.PNG.STRATEGY.RLE, "filter": imagecodecs.PNG.FILTER.NONE}


def encode_png(pixels: np.ndarray) -> bytes:
    """A (28, 28) uint8 array as an 8-bit grayscale PNG."""
    return bytes(imagecodecs.png_encode(pixels, **_PNG_ENCODING))  # bytes already; bytes() returns it as it is


def to_pixels(values: np.ndarray) -> np.ndarray:
    """Model output in [0, 1], shape (n, 28, 28, 1), to uint8 (n, 28, 28)."""
    # In place on one contiguous copy (the channel axis dropped by a reshape, not a strided view): a quarter
    # of the cost of clipping the view and scaling into new arrays, on a 256-image batch.
    scaled: np.ndarray = np.clip(values.reshape(values.shape[:-1]), 0.0, 1.0)
    scaled *= 255.0
    scaled += 0.5
    return scaled.astype(np.uint8)


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) to float32 (n, 28, 28, 1) in [0, 1], the models' input."""
    values = pixels.astype(np.float32)
    values *= 1.0 / 255.0  # in place: a second array of a batch's size costs more than the scaling
    return values[..., np.newaxis]
