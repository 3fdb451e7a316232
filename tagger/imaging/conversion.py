"""The decoded picture as upright 8-bit RGB, at no more than the size it is needed at.

What is kept is only as large as needed: JPEGs are decoded at 1/2, 1/4 or 1/8 scale inside
libjpeg (draft mode, chosen by the decoder); other formats, which Pillow can only decode whole,
are converted to 8-bit RGB band by band and box-reduced (``Image.reduce``) in the same pass, so
no full-size RGB, RGBA or float copy of a big image ever exists. The EXIF orientation is applied
to the small converted picture, not the full-size decode.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Final

import numpy as np
from PIL import ExifTags, Image

# EXIF orientation → the transpose that makes the picture upright (ImageOps.exif_transpose's
# table, applied here to the small converted picture instead of the full-size decode).
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Orientations that swap width and height (the transposing and the 90-degree ones).
SWAPS_AXES: Final = frozenset({5, 6, 7, 8})

_WHITE: Final = (255, 255, 255)
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

# Rows of a big picture are converted and reduced in bands of about this many bytes.
BAND_BYTES: Final = 4 * 1024 * 1024


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation, 1 when absent or unreadable: bad metadata must not cost the photo."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # malformed EXIF blocks raise anything from struct.error to KeyError
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_rgb(img: Image.Image, factor: int, orientation: int) -> Image.Image:
    """The loaded picture as upright 8-bit RGB, box-reduced by ``factor``."""
    small = _reduced_8bit(img, factor)
    if orientation in _UPRIGHT:
        small = small.transpose(_UPRIGHT[orientation])
    return small if small.mode == "RGB" else small.convert("RGB")


def _reduced_8bit(img: Image.Image, factor: int) -> Image.Image:
    """8-bit L or RGB at 1/``factor`` of the size, converted band by band so no full-size copy
    in another mode is made: a 9999x9999 palette picture holds 100 MB, its RGB 400 MB more."""
    if img.mode in ("RGB", "L") and "transparency" not in img.info:
        return img if factor == 1 else img.reduce(factor)
    convert = _band_converter(img)
    width, height = img.size
    rows = factor * max(1, BAND_BYTES // (width * 4 * factor))
    if rows >= height:
        whole = convert(img)
        return whole if factor == 1 else whole.reduce(factor)
    result: Image.Image | None = None
    for top in range(0, height, rows):
        band = convert(img.crop((0, top, width, min(top + rows, height))))
        if factor > 1:
            band = band.reduce(factor)
        if result is None:
            size = (math.ceil(width / factor), math.ceil(height / factor))
            result = Image.new(band.mode, size)
        result.paste(band, (0, top // factor))
    assert result is not None  # height > rows >= 1, so the loop ran
    return result


def _band_converter(img: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """How one band of ``img`` becomes 8-bit L or RGB (alpha flattened onto white)."""
    mode = img.mode
    if mode.startswith("I;16"):
        return _sixteen_bit_grey
    if mode in ("I", "F"):
        return functools.partial(_scaled_grey, scale=_grey_scale(img))
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _on_white
    if mode == "1":
        return lambda band: band.convert("L")
    # P, CMYK (Adobe-inverted and YCCK are undone by the JPEG reader), YCbCr, LAB, HSV.
    return lambda band: band.convert("RGB")


def _sixteen_bit_grey(band: Image.Image) -> Image.Image:
    """16-bit → 8-bit by rounding x * 255 / 65535 (= x / 257) in integers: Pillow's own
    conversion clips at 255 instead of scaling, which turns a 16-bit photo white."""
    values = np.asarray(band).astype(np.uint32)
    values += 128
    values //= 257
    return Image.fromarray(values.astype(np.uint8))


def _grey_scale(img: Image.Image) -> float:
    """``I`` and ``F`` carry no range, so the values decide: floats up to 1.0 are normalised,
    integers up to 255 are already 8-bit, up to 65535 they are 16-bit, and anything larger is
    scaled by its maximum (Pillow's extrema, which copy nothing)."""
    extrema = img.getextrema()
    high = extrema[1] if isinstance(extrema[1], (int, float)) else 0
    peak = max(float(high), 0.0)
    if img.mode == "F" and peak <= 1.0:
        return 255.0
    if peak <= 255.0:
        return 1.0
    if peak <= 65535.0:
        return 255.0 / 65535.0
    return 255.0 / peak


def _scaled_grey(band: Image.Image, scale: float) -> Image.Image:
    values = np.array(band, dtype=np.float32)  # a writable copy of one band
    values *= np.float32(scale)
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return Image.fromarray(values.astype(np.uint8))


def _on_white(img: Image.Image) -> Image.Image:
    """Flatten transparency onto white: transparent product shots and logos are drawn for a
    white page, and black (what dropping alpha gives) changes what the model sees."""
    if img.mode not in ("RGBA", "LA"):
        img = img.convert("RGBA")
    flat = Image.new("RGB", img.size, _WHITE)
    flat.paste(img, (0, 0), img)
    return flat
