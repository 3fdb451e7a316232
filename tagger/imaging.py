"""Photo bytes → upright RGB picture → the model's input tensor.

Uploads are hostile until proven otherwise: the byte and pixel limits are checked before any
pixel is decoded, only the formats people actually upload photos in are parsed (fewer parsers
exposed to untrusted bytes), and every way a decode can fail becomes one of the typed,
permanent errors in :mod:`tagger.errors` with a one-line reason, so a bad file is recorded
once and never retried.

Truncated files are refused (``CorruptImage``) rather than decoded with a grey fill: Pillow's
switch for the latter, ``ImageFile.LOAD_TRUNCATED_IMAGES``, is process-global, and tags read
from half a photo are worse than an honest failure. That includes a JPEG missing only its
end-of-image marker: libjpeg cannot tell it from one cut mid-scan without decoding it, so
accepting one would mean accepting all.

This is the hot path of every worker, so the common case (a baseline RGB JPEG without an
orientation tag) is: parse the header, maybe pick a DCT scale, decode, done — no conversions
and no copies. Big JPEGs are decoded at 1/2, 1/4 or 1/8 scale in libjpeg itself (draft mode),
which is several times faster than decoding every pixel and resizing afterwards.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from tagger.config import ImageSettings
from tagger.errors import CorruptImage, EmptyInput, ImageTooLarge, NotAnImage, TaggerError
from tagger.schemas import PreprocessSpec

__all__ = ["DecodedImage", "decode", "load_tensor", "preprocess"]

# Formats photos arrive in. MPO (multi-picture JPEG from cameras) opens through "JPEG".
_PHOTO_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")

# Orientations that swap width and height (the transposing and the 90-degree ones).
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})

_WHITE: Final = (255, 255, 255)

# First bytes of files that are not photos but get uploaded as if they were; the name makes
# the failure reason useful to whoever uploaded it. Checked only after Pillow gave up.
_NOT_IMAGES: Final = (
    (b"%PDF-", "PDF document"),
    (b"PK\x03\x04", "ZIP archive (or Office document)"),
    (b"PK\x05\x06", "ZIP archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf", "7-Zip archive"),
    (b"8BPS", "Photoshop document"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000 image (unsupported format)"),
    (b"\x7fELF", "executable"),
    (b"MZ", "Windows executable"),
)
# Image signatures: bytes that start like a photo but that Pillow could not open are corrupt,
# not "something else".
_IMAGE_MAGIC: Final = (
    (b"\xff\xd8", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A decoded photo plus the facts about the original that decoding at reduced scale hides.

    ``width`` and ``height`` are the upright photo's full size, so results report what the user
    uploaded even when ``image`` was decoded at 1/2, 1/4 or 1/8 scale.
    """

    image: Image.Image
    width: int
    height: int
    format: str


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the slice is still text.
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def _image_kind(head: bytes) -> str | None:
    """The photo format ``head`` starts like, if any, going by its signature alone."""
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF/AVIF"
    return None


def _unidentified(data: bytes) -> TaggerError:
    """Why Pillow could not open ``data``: a photo with a damaged header, or not a photo at all."""
    head = data[:1024]
    kind = _image_kind(head)
    if kind is not None:
        return CorruptImage(f"{kind} data is corrupt or truncated")
    if head[4:8] == b"ftyp":
        return NotAnImage("MP4/QuickTime video, not an image")
    for magic, name in _NOT_IMAGES:
        if head.startswith(magic):
            return NotAnImage(f"{name}, not an image")
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lowered.startswith(b"<"):
        if b"<svg" in lowered:
            return NotAnImage("SVG vector graphics, not a supported image format")
        if b"<html" in lowered or lowered.startswith(b"<!doctype html"):
            return NotAnImage("HTML document, not an image")
        if lowered.startswith(b"<?xml"):
            return NotAnImage("XML document, not an image")
    if lowered.startswith((b"{", b"[")) and _looks_like_text(head):
        return NotAnImage("JSON or other text, not an image")
    if _looks_like_text(head):
        return NotAnImage("text, not an image")
    return NotAnImage("unrecognised data, not an image")


def _open(data: bytes) -> Image.Image:
    """Parse the header only; pixels are decoded later, after the limits are checked."""
    try:
        return Image.open(io.BytesIO(data), formats=_open_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own global bound, reached before ours could look (or warnings-as-errors).
        raise ImageTooLarge(f"image is too large to decode: {_one_line(exc)}") from exc
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Exception as exc:  # any parser failure on untrusted bytes is a property of the bytes
        kind = _image_kind(data[:16]) or "image"
        raise CorruptImage(f"corrupt or truncated {kind} header: {_one_line(exc)}") from exc


def _orientation(img: Image.Image) -> int:
    """EXIF orientation, 1 when absent or unreadable: bad metadata must not cost the photo."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # malformed EXIF blocks raise anything from struct.error to KeyError
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _high_depth_grey(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale → 8-bit. Pillow's own conversion clips at 255 instead
    of scaling, which turns a 16-bit photo white.

    The ``I;16`` modes are 16-bit by definition. ``I`` and ``F`` carry no range, so the values
    decide: floats up to 1.0 are normalised, integers up to 255 are already 8-bit, up to 65535
    they are 16-bit, and anything larger is scaled by its maximum.
    """
    values = np.asarray(img)
    if img.mode.startswith("I;16"):
        scaled = values.astype(np.float32) * (255.0 / 65535.0)
    else:
        values = values.astype(np.float32)
        peak = float(values.max()) if values.size else 0.0
        if img.mode == "F" and peak <= 1.0:
            scale = 255.0
        elif peak <= 255.0:
            scale = 1.0
        elif peak <= 65535.0:
            scale = 255.0 / 65535.0
        else:
            scale = 255.0 / peak
        scaled = values * scale
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _on_white(img: Image.Image) -> Image.Image:
    """Flatten transparency onto white: transparent product shots and logos are drawn for a
    white page, and black (what dropping alpha gives) changes what the model sees."""
    if img.mode not in ("RGBA", "LA"):
        img = img.convert("RGBA")
    flat = Image.new("RGB", img.size, _WHITE)
    flat.paste(img, (0, 0), img)
    return flat


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_grey(img)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _on_white(img)
    # P, L, 1, CMYK (Adobe-inverted and YCCK are undone by the JPEG reader), YCbCr, LAB, HSV.
    return img.convert("RGB")


def decode(data: bytes, limits: ImageSettings, min_side: int | None = None) -> DecodedImage:
    """Decode uploaded bytes into an upright RGB image.

    ``min_side`` is the shorter side the caller will resize to; a JPEG is then decoded at the
    largest DCT reduction (1/2, 1/4, 1/8) that keeps its shorter side at least that long.
    Animated GIF/WebP/PNG give their first frame. Raises ``EmptyInput``, ``ImageTooLarge``,
    ``NotAnImage`` or ``CorruptImage``; nothing else escapes for bad input.
    """
    if not data:
        raise EmptyInput("empty file (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")

    img = _open(data)
    fmt = img.format or "unknown"
    width, height = img.size
    if width <= 0 or height <= 0:
        raise CorruptImage(f"{fmt} header gives an empty size {width}x{height}")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} = {width * height} pixels exceeds the limit of "
            f"{limits.max_pixels} pixels"
        )

    if min_side is not None and min_side > 0 and isinstance(img, JpegImagePlugin.JpegImageFile):
        # A square request keeps *both* sides >= min_side, whichever way the photo is turned.
        img.draft("RGB", (min_side, min_side))

    try:
        img.load()
        # Read after load: a PNG may keep its eXIf chunk behind the pixel data.
        orientation = _orientation(img)
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        rgb = _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image is too large to decode: {_one_line(exc)}") from exc
    except Exception as exc:  # any decoder failure on untrusted bytes is a property of the bytes
        raise CorruptImage(f"corrupt or truncated {fmt} data: {_one_line(exc)}") from exc
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return DecodedImage(image=rgb, width=width, height=height, format=fmt)


def preprocess(image: Image.Image, spec: PreprocessSpec) -> npt.NDArray[np.float32]:
    """Resize the shorter side to ``spec.resize_to``, centre-crop ``spec.size`` and normalise
    to ``(x - mean) / std``: one (size, size, 3) float32 RGB element of an NHWC batch.

    The resize and the crop happen in one Pillow call (its ``box`` argument), so only the
    pixels that survive the crop are resampled and no intermediate image is made. Pillow's bicubic
    filter antialiases when shrinking, so a big photo is not aliased into noise.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    size = spec.size
    scale = spec.resize_to / min(width, height)
    resized_w = max(size, round(width * scale))
    resized_h = max(size, round(height * scale))
    left = (resized_w - size) // 2
    top = (resized_h - size) // 2
    sx = resized_w / width
    sy = resized_h / height
    box = (left / sx, top / sy, (left + size) / sx, (top + size) / sy)
    cropped = image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    tensor = np.array(cropped, dtype=np.float32)
    # Normalise through a (size, size*3) view with whole-row mean/std vectors: broadcasting a
    # length-3 vector over the last axis runs numpy's inner loop 3 elements at a time, ~9x slower.
    rows = tensor.reshape(size, size * 3)
    rows -= np.tile(np.asarray(spec.mean, dtype=np.float32), size)
    rows *= np.tile(np.float32(1.0) / np.asarray(spec.std, dtype=np.float32), size)
    return tensor


def load_tensor(
    data: bytes, limits: ImageSettings, spec: PreprocessSpec
) -> tuple[npt.NDArray[np.float32], DecodedImage]:
    """Decode and preprocess one photo; the decoded image comes back for its size and format."""
    decoded = decode(data, limits, min_side=spec.resize_to)
    return preprocess(decoded.image, spec), decoded
