"""The input normalisation rule, mode by mode."""

from __future__ import annotations

import io

import numpy as np
import png as pypng
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from app import imaging
from app.errors import InvalidInput, PayloadTooLarge, UndecodableImage, UnsupportedMediaType
from app.imaging import DecodeOptions, decode, encode_png, to_model_input, to_pixels
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


def _pypng(pixels: np.ndarray, **writer: object) -> bytes:
    buffer = io.BytesIO()
    pypng.Writer(28, 28, greyscale=True, bitdepth=8, **writer).write(buffer, pixels.tolist())
    return buffer.getvalue()


def _pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"))


@settings(max_examples=60, deadline=None)
@given(
    pixels=arrays(np.uint8, (28, 28)),
    encoder=st.sampled_from(["pillow", "pillow-level-9", "pypng-interlaced", "pypng-level-0", "ours"]),
)
def test_a_28x28_grayscale_png_decodes_as_pillow_reads_it(pixels: np.ndarray, encoder: str) -> None:
    """The common upload skips Pillow (libpng decodes it); every encoder's file gives Pillow's pixels."""
    data = {
        "pillow": lambda: png(pixels),
        "pillow-level-9": lambda: png(pixels, compress_level=9),
        "pypng-interlaced": lambda: _pypng(pixels, interlace=True),
        "pypng-level-0": lambda: _pypng(pixels, compression=0),
        "ours": lambda: encode_png(pixels),
    }[encoder]()
    assert np.array_equal(decode(data, OPTIONS), _pillow_pixels(data))
    assert np.array_equal(decode(data, DecodeOptions(invert=True)), 255 - _pillow_pixels(data))


def test_the_common_upload_does_not_go_through_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("Pillow opened a 28x28 8-bit grayscale PNG")

    monkeypatch.setattr(imaging, "_open", refuse)
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(decode(png(pixels), OPTIONS), pixels)


def test_a_grayscale_png_with_a_transparent_value_keeps_its_gray_levels() -> None:
    """tRNS on a grayscale image names a transparent gray value; the rule composites alpha channels only."""
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(decode(png(pixels, transparency=5), OPTIONS), pixels)


@pytest.mark.parametrize("cut", [1, 13, 40, 200])
def test_a_truncated_grayscale_png_is_undecodable_or_complete(cut: int) -> None:
    """Cut anywhere, a PNG is answered as Pillow answers it: an error naming the problem, or (when only the
    end marker is lost) the image."""
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    data = png(pixels)[:-cut]
    try:
        expected = _pillow_pixels(data)
    except Exception:  # whatever Pillow raises, decode must answer UndecodableImage
        with pytest.raises(UndecodableImage, match=r"PNG|corrupt"):
            decode(data, OPTIONS)
    else:
        assert np.array_equal(decode(data, OPTIONS), expected)


def test_a_grayscale_png_refused_by_the_allow_list_stays_refused() -> None:
    with pytest.raises(UnsupportedMediaType, match="PNG"):
        decode(png(np.zeros((28, 28), dtype=np.uint8)), DecodeOptions(formats=("BMP",)))


def test_encode_png_writes_an_8_bit_grayscale_png() -> None:
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    with Image.open(io.BytesIO(encode_png(pixels))) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
        assert np.array_equal(np.asarray(image), pixels)


def test_to_pixels_clips_and_rounds_each_image_of_a_batch() -> None:
    values = np.array([-0.5, 0.0, 0.5 / 255, 0.499 / 255, 0.5, 1.0, 7.0], dtype=np.float32)
    batch = np.stack([np.resize(values, (28, 28)), np.resize(values[::-1], (28, 28))])[..., np.newaxis]
    pixels = to_pixels(batch)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (2, 28, 28)
    assert pixels[0, 0, :7].tolist() == [0, 0, 1, 0, 128, 255, 255]
    assert pixels[1, 0, :7].tolist() == [255, 255, 128, 0, 1, 0, 0]
    assert (to_pixels(batch[1:]) == pixels[1:]).all()
    assert batch[0, 0, 0, 0] == np.float32(-0.5)  # the model's output is left as it was


def test_to_model_input_scales_to_unit_range_with_a_channel_axis() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    values = to_model_input(pixels)
    assert values.dtype == np.float32
    assert values.shape == (1, 16, 16, 1)
    assert values[0, 0, 0, 0] == 0.0
    assert values[0, 15, 15, 0] == 1.0
    assert np.allclose(values[..., 0], pixels / 255, rtol=1e-6, atol=0)
    assert pixels[0, 15, 15] == 255  # the pixels are left as they were
