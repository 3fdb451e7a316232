"""Opening untrusted bytes with Pillow, and what its failures mean.

Only the formats people actually upload photos in are parsed (fewer parsers exposed to untrusted
bytes), headers are parsed before any pixel is decoded so the limits can be checked first, and
every way a parser or decoder can fail becomes one of the typed, permanent errors in
:mod:`tagger.errors` with a one-line reason, so a bad file is recorded once and never retried.
"""

from __future__ import annotations

import functools
import io
from typing import Final

import pillow_heif
from PIL import Image, UnidentifiedImageError

from tagger.errors import CorruptImage, ImageTooLarge, TaggerError, TruncatedImage
from tagger.formats import PHOTO_FORMATS
from tagger.imaging.sniffing import image_kind, unidentified
from tagger.imaging.truncation import JpegLayout, ends_early, webp_cut_short

# Formats photos arrive in, in tagger.formats' order. MPO (multi-picture JPEG from cameras)
# opens through "JPEG".
_PHOTO_FORMATS: Final = tuple(PHOTO_FORMATS)


@functools.cache
def _register_heif() -> None:
    """pillow_heif plugs into Pillow's process-wide format registry; doing it once, lazily,
    keeps importing tagger free of side effects while every decode can rely on it."""
    pillow_heif.register_heif_opener()


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """The photo formats this Pillow build can open (AVIF needs a libavif-enabled build)."""
    _register_heif()
    Image.init()
    return tuple(name for name in _PHOTO_FORMATS if name in Image.OPEN)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def open_image(source: bytes, data: bytes) -> Image.Image:
    """Parse the header of ``source`` (``data`` or a JPEG's rearranged copy) only; pixels are
    decoded later, after the limits are checked."""
    try:
        return Image.open(io.BytesIO(source), formats=_open_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own global bound, reached before ours could look (or warnings-as-errors).
        raise ImageTooLarge(f"image is too large to decode: {one_line(exc)}") from exc
    except UnidentifiedImageError:
        raise unidentified(data) from None
    except Exception as exc:  # any parser failure on untrusted bytes is a property of the bytes
        kind = image_kind(data[:16]) or "image"
        raise _failure(data, f"corrupt or truncated {kind} header", exc) from exc


def load_pixels(img: Image.Image, data: bytes, fmt: str, layout: JpegLayout | None) -> None:
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image is too large to decode: {one_line(exc)}") from exc
    except Exception as exc:  # any decoder failure on untrusted bytes is a property of the bytes
        if layout is not None and layout.single_scan and _says_truncated(exc):
            raise TruncatedImage(
                "truncated JPEG: its data ends before the last block of the picture"
            ) from exc
        raise _failure(data, f"corrupt or truncated {fmt} data", exc) from exc


def _says_truncated(exc: BaseException) -> bool:
    """Pillow's own verdict ("image file is truncated", "Truncated File Read", ...)."""
    return isinstance(exc, OSError) and "truncated" in str(exc).lower()


def _failure(data: bytes, what: str, exc: BaseException) -> TaggerError:
    """The typed error for a parser or decoder failure: truncated when the container or Pillow
    says the data stops early, corrupt otherwise."""
    short = ends_early(data)
    if short is not None:
        return TruncatedImage(short)
    if _says_truncated(exc):
        kind = image_kind(data[:16]) or "image"
        return TruncatedImage(f"truncated {kind} data: {one_line(exc)}")
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and webp_cut_short(data):
        return TruncatedImage("truncated WEBP: its image data ends before the picture does")
    return CorruptImage(f"{what}: {one_line(exc)}")
