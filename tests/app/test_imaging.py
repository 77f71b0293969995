"""The input normalisation rule, mode by mode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.errors import InvalidInput, PayloadTooLarge, UndecodableImage, UnsupportedMediaType
from app.imaging import DecodeOptions, decode, encode_png
from tests.conftest import png

OPTIONS = DecodeOptions()


def test_l_mode_passes_through() -> None:
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(decode(png(pixels), OPTIONS), pixels)


def test_rgb_uses_itu_601_luma() -> None:
    rgb = np.zeros((28, 28, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = 100
    rgb[..., 2] = 50
    expected = round(200 * 0.299 + 100 * 0.587 + 50 * 0.114)
    assert np.abs(decode(png(rgb), OPTIONS).astype(int) - expected).max() <= 1


def test_alpha_is_composited_over_black() -> None:
    la = np.zeros((28, 28, 2), dtype=np.uint8)
    la[..., 0] = 200
    la[..., 1] = 0
    la[:14, :, 1] = 255
    out = decode(png(la, "LA"), OPTIONS)
    assert np.all(out[:14] == 200)
    assert np.all(out[14:] == 0)


def test_rgba_half_transparent_halves_the_value() -> None:
    rgba = np.full((28, 28, 4), 200, dtype=np.uint8)
    rgba[..., 3] = 128
    assert np.abs(decode(png(rgba, "RGBA"), OPTIONS).astype(int) - 100).max() <= 1


def test_palette_with_transparency() -> None:
    image = Image.new("P", (28, 28), 1)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.info["transparency"] = 1
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=1)
    assert np.all(decode(buffer.getvalue(), OPTIONS) == 0)


def test_16_bit_is_scaled_to_8_bit() -> None:
    wide = np.full((28, 28), 65535, dtype=np.uint16)
    wide[0, 0] = 0
    wide[0, 1] = 32896  # 128 * 257
    image = Image.fromarray(wide)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    out = decode(buffer.getvalue(), OPTIONS)
    assert out[0, 0] == 0
    assert out[0, 1] == 128
    assert out[5, 5] == 255


def test_invert() -> None:
    pixels = np.full((28, 28), 10, dtype=np.uint8)
    assert np.all(decode(png(pixels), DecodeOptions(invert=True)) == 245)


def test_resize_only_when_asked() -> None:
    big = png(np.full((56, 56), 77, dtype=np.uint8))
    with pytest.raises(InvalidInput, match="56x56"):
        decode(big, OPTIONS)
    assert np.all(decode(big, DecodeOptions(resize=True)) == 77)


def test_pixel_limit_applies_to_resizing() -> None:
    big = png(np.zeros((100, 100), dtype=np.uint8))
    with pytest.raises(PayloadTooLarge, match="10000 pixels"):
        decode(big, DecodeOptions(resize=True, max_pixels=5000))


def test_other_formats_refused_unless_allow_listed() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(buffer, format="BMP")
    with pytest.raises(UnsupportedMediaType, match="BMP"):
        decode(buffer.getvalue(), OPTIONS)
    assert decode(buffer.getvalue(), DecodeOptions(formats=("PNG", "BMP"))).shape == (28, 28)


def test_animated_png_is_refused() -> None:
    frames = [Image.fromarray(np.full((28, 28), v, dtype=np.uint8)) for v in (0, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidInput, match="2 frames"):
        decode(buffer.getvalue(), OPTIONS)


def test_corrupt_crc_is_undecodable() -> None:
    data = bytearray(png(np.full((28, 28), 3, dtype=np.uint8)))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF
    with pytest.raises(UndecodableImage):
        decode(bytes(data), OPTIONS)


def test_encode_png_round_trips() -> None:
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(decode(encode_png(pixels), OPTIONS), pixels)
