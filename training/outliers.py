"""Images unlike a model's training data: the sets its anomaly score is trained against and judged on.

All are uint8 (n, 28, 28), light on dark like MNIST, except the inverted set, which is what a
dark-on-light scan sent without ``invert=true`` looks like.

- ``letters``: A-Z and a-z rendered with the fonts on this machine, fitted in a 20x20 box and
  centred by centre of mass in 28x28, as MNIST's digits were. The fonts are split
  (:func:`split_fonts`): the score trains against letters in the sans-serif faces, and is judged on
  letters in the serif and monospaced faces it never saw, and on letters in the faces it saw at
  other sizes, pen weights and positions (``varied``), each reported apart.
- ``strokes``: random pen strokes and outlines drawn the same way; used to train the score, so
  that it learns what makes this dataset's shapes typical rather than "any bright strokes".
- ``glyphs``: typographic symbols and the Greek letters that look like no Latin one, rendered like
  the letters; used to train the score. No Latin letter (nor a look-alike) is among them.
- ``photographs``: photographs shrunk to 28x28 in grey, as a caller's ``resize=true`` would; never
  trained on.
- ``blanks``: images with nothing drawn (black, flat grey, random noise); with the evaluation's
  pooled noise on top they are the empty and noise-only images callers send; never trained on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Greek letters unlike any Latin one, and symbols: outlier exposure disjoint from ``LETTERS``
#: (and nothing shaped like a bare stroke, which is a 1).
GLYPHS = "ΓΔΘΛΞΠΣΦΨΩβγδεζηθλμξπσφψω@#$%&?§¶∂∑√≈≠±÷×∞★☆♠♣♥♦→←↑↓⇒⇔∀∃∈∩∪⊂⊕⊗∇∮♪♫☺☼✓✗※‡<>"
_CANVAS = 112  # draw at 4x, then fit into 20x20 with antialiasing
#: Font families whose name holds one of these are held out of the score's training entirely.
HELD_OUT_STYLES = ("Serif", "Mono")
#: ``varied`` renderings: box sizes, extra pen weight and how far from the centre of mass.
VARIED_BOX = (13, 23)
VARIED_STROKE = (0, 10)
VARIED_OFFSET_PX = 4
#: Photographs that ship with scikit-image (no download): people, animals, objects, scenes, textures,
#: the sky, microscopy; and its Labeled Faces in the Wild subset (100 faces, 100 other patches).
PHOTOGRAPHS = (
    "astronaut",
    "camera",
    "cat",
    "coffee",
    "coins",
    "moon",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "retina",
    "hubble_deep_field",
    "clock",
    "immunohistochemistry",
)


def fonts() -> list[Path]:
    """Every TrueType/OpenType font file found, sorted for reproducibility."""
    found: set[Path] = set()
    for folder in FONT_DIRS:
        if folder.is_dir():
            found.update(p for p in folder.rglob("*") if p.suffix.lower() in {".ttf", ".otf"})
    return sorted(found)


def split_fonts(font_files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(fonts the score may train against, fonts held out of its training): by family, the serif and
    monospaced faces held out (:data:`HELD_OUT_STYLES`)."""
    held_out = [path for path in font_files if any(style in path.stem.split("-")[0] for style in HELD_OUT_STYLES)]
    return [path for path in font_files if path not in held_out], held_out


def fit_like_mnist(drawing: np.ndarray, box: int = 20, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Scale a light-on-dark drawing's bounding box into ``box`` x ``box`` (aspect kept; MNIST's 20) and
    centre it by mass in 28x28, moved by ``offset`` pixels."""
    ys, xs = np.nonzero(drawing > 0)
    out = np.zeros((28, 28), dtype=np.uint8)
    if len(ys) == 0:
        return out
    crop = drawing[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    h, w = small.shape
    top, left = (28 - h) // 2, (28 - w) // 2
    out_f = np.zeros((28, 28), dtype=np.float32)
    out_f[top : top + h, left : left + w] = small
    cy, cx = ndimage.center_of_mass(out_f)
    shifted = ndimage.shift(out_f, (14 - cy + offset[0], 14 - cx + offset[1]), order=1, mode="constant")
    return np.asarray(np.clip(shifted, 0, 255), dtype=np.uint8)


def _glyph(char: str, font: ImageFont.FreeTypeFont, stroke: int) -> np.ndarray:
    canvas = Image.new("L", (_CANVAS * 2, _CANVAS * 2), 0)
    ImageDraw.Draw(canvas).text(
        (_CANVAS // 2, _CANVAS // 2), char, fill=255, font=font, stroke_width=stroke, stroke_fill=255
    )
    return np.asarray(canvas)


def letters(
    font_files: Iterable[Path] | None = None, seed: int = 0, variants: int = 2, varied: bool = False
) -> np.ndarray:
    """Every letter in every font, each drawn ``variants`` times with a random pen weight and slant (and with
    ``varied``, at a random size, a heavier pen and off centre)."""
    return rendered(LETTERS, font_files, seed, variants, varied)


def glyphs(font_files: Iterable[Path] | None = None, seed: int = 0, variants: int = 2) -> np.ndarray:
    """Every symbol of :data:`GLYPHS` in every font, drawn like :func:`letters`."""
    return rendered(GLYPHS, font_files, seed, variants)


def rendered(
    chars: str, font_files: Iterable[Path] | None, seed: int, variants: int, varied: bool = False
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    for path in font_files if font_files is not None else fonts():
        try:
            font = ImageFont.truetype(str(path), size=_CANVAS)
        except OSError:
            continue
        for char in chars:
            for _ in range(variants):
                stroke = int(rng.integers(*VARIED_STROKE)) if varied else int(rng.integers(0, 6))
                glyph = _glyph(char, font, stroke=stroke)
                angle = float(rng.uniform(-12, 12))
                rotated = np.asarray(Image.fromarray(glyph).rotate(angle, resample=Image.Resampling.BILINEAR))
                if varied:
                    box = int(rng.integers(*VARIED_BOX))
                    offset = rng.uniform(-VARIED_OFFSET_PX, VARIED_OFFSET_PX, size=2)
                    images.append(fit_like_mnist(rotated, box, (float(offset[0]), float(offset[1]))))
                else:
                    images.append(fit_like_mnist(rotated))
    return np.stack(images) if images else np.zeros((0, 28, 28), dtype=np.uint8)


def strokes(count: int, seed: int) -> np.ndarray:
    """Random pen drawings: smooth curves, zig-zags, polygons, ellipses and scribbles, with MNIST-like pens."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
        draw = ImageDraw.Draw(canvas)
        width = int(rng.integers(6, 16))
        for _ in range(int(rng.integers(2, 5))):  # two or more parts: one line or ring is a digit
            shape = rng.integers(0, 4)
            points = [tuple(p) for p in rng.uniform(8, _CANVAS - 8, size=(int(rng.integers(2, 7)), 2))]
            if shape == 0:  # a curve through random points
                t = np.linspace(0, 1, 40)[:, None]
                ctrl = np.asarray(points)
                curve = _bezier(ctrl, t)
                draw.line([tuple(p) for p in curve], fill=255, width=width, joint="curve")
            elif shape == 1:  # a zig-zag
                draw.line(points, fill=255, width=width, joint="curve")
            elif shape == 2 and len(points) >= 3:  # an outlined or filled polygon
                if rng.random() < 0.5:
                    draw.polygon(points, outline=255, width=width)
                else:
                    draw.polygon(points, fill=int(rng.integers(120, 256)))
            else:  # an ellipse
                (x0, y0), (x1, y1) = sorted(points[:2]) if len(points) >= 2 else (points[0], points[0])
                box = (min(x0, x1), min(y0, y1), max(x0, x1) + 10, max(y0, y1) + 10)
                draw.ellipse(box, outline=255, width=width)
        images[i] = fit_like_mnist(np.asarray(canvas.filter(ImageFilter.GaussianBlur(1.5))))
    return images


def _bezier(ctrl: np.ndarray, t: np.ndarray) -> np.ndarray:
    """De Casteljau's evaluation of a Bezier curve with control points ``ctrl`` at parameters ``t``."""
    points = np.repeat(ctrl[None], len(t), axis=0)
    while points.shape[1] > 1:
        points = (1 - t[:, :, None]) * points[:, :-1] + t[:, :, None] * points[:, 1:]
    return points[:, 0]


def inverted(images: np.ndarray) -> np.ndarray:
    """Dark on light: what a scan sent without ``invert=true`` looks like."""
    return np.asarray(255 - images, dtype=np.uint8)


def photographs(count: int, seed: int) -> np.ndarray:
    """``count`` crops of :data:`PHOTOGRAPHS` in grey, each a random square from a quarter of its picture's
    short side to all of it, shrunk to 28x28; then the 200 patches of the LFW subset, shrunk likewise."""
    from skimage import color, data

    rng = np.random.default_rng(seed)
    pictures = []
    for name in PHOTOGRAPHS:
        picture = getattr(data, name)()
        grey = color.rgb2gray(picture) if picture.ndim == 3 else picture / 255.0
        pictures.append(np.asarray(np.round(grey * 255), dtype=np.uint8))
    crops = np.empty((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        picture = pictures[i % len(pictures)]
        height, width = picture.shape
        side = int(rng.integers(min(height, width) // 4, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(picture[top : top + side, left : left + side])
        crops[i] = np.asarray(crop.resize((28, 28), Image.Resampling.LANCZOS))
    patches = np.asarray(np.round(data.lfw_subset() * 255), dtype=np.uint8)
    shrunk = [np.asarray(Image.fromarray(patch).resize((28, 28), Image.Resampling.LANCZOS)) for patch in patches]
    return np.concatenate([crops, np.stack(shrunk)])


def blanks(count: int, seed: int) -> np.ndarray:
    """Images with nothing drawn, in thirds: black, flat grey (a level drawn from 1 to 255), and uniform
    random noise."""
    rng = np.random.default_rng(seed)
    kind = np.arange(count) % 3
    levels = rng.integers(1, 256, size=(count, 1, 1))
    noise = rng.integers(0, 256, size=(count, 28, 28))
    images = np.where((kind == 1)[:, None, None], levels, np.where((kind == 2)[:, None, None], noise, 0))
    return np.asarray(images, dtype=np.uint8)
