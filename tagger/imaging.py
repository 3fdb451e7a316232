"""Photo bytes → upright RGB picture → the model's input tensor.

Uploads are hostile until proven otherwise: the byte, pixel and decoded-byte limits are checked
from the header before any pixel is decoded, only the formats people actually upload photos in
are parsed (fewer parsers exposed to untrusted bytes), and every way a decode can fail becomes
one of the typed, permanent errors in :mod:`tagger.errors` with a one-line reason, so a bad file
is recorded once and never retried.

Memory. One worker process decodes on several I/O threads at once, so a per-photo limit alone
does not bound it: eight 16-bit 9000x9000 TIFFs of 250 KB each are each "allowed" and together
take gigabytes. An :class:`ImageDecoder` therefore owns a :class:`DecodeBudget`, a byte-weighted
semaphore: every decode reserves an estimate of its peak (decoded pixels in Pillow's storage
size, the decoder's own buffers, the conversions after it) before a pixel is decoded and gives
it back once its tensor is made, so big decodes wait for each other while small ones flow.
What is kept is only as large as needed: JPEGs are decoded at 1/2, 1/4 or 1/8 scale inside
libjpeg (draft mode); other formats, which Pillow can only decode whole, are converted to 8-bit
RGB band by band and box-reduced (``Image.reduce``) in the same pass, so no full-size RGB, RGBA
or float copy of a big image ever exists.

Truncation. A file whose data ends before its picture does is refused (``TruncatedImage``)
rather than tagged from grey-filled pixels, even when an end marker was appended. Pillow's
switch for accepting such files, ``ImageFile.LOAD_TRUNCATED_IMAGES``, stays off, which fails
files that simply stop; but libjpeg treats *any* marker inside a scan as the end of its data,
pads the rest of the picture with zeros and only issues a warning Pillow throws away. So a JPEG
is walked marker by marker first (cheap: the entropy-coded data is skipped with one regex
search per scan). A baseline/sequential JPEG with one scan is then decoded from its scan data
*without* the marker that ends it, followed by a few filler bytes: libjpeg finishes every
block only if the data holds every block, and otherwise suspends waiting for more, which Pillow
reports as truncated. Progressive (and other multi-scan) JPEGs read to their end marker before
producing a row, so for them the scans must cover every coefficient, and the picture is decoded
a second time with filler bytes before the end marker: a complete file skips them as padding
and yields the same pixels, a cut one decodes them as data and does not. PNG, GIF, TIFF and
BMP decoders stop on short data themselves; WebP's container sizes give a cut away.

This is the hot path of every worker, so the common case (a baseline RGB JPEG without an
orientation tag) is: walk the markers, parse the header, maybe pick a DCT scale, decode, done —
no conversions and no copies of pixels.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import itertools
import math
import re
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

from tagger.config import ImageSettings
from tagger.errors import (
    CorruptImage,
    EmptyInput,
    ImageTooLarge,
    NotAnImage,
    TaggerError,
    TruncatedImage,
)
from tagger.schemas import PreprocessSpec

__all__ = ["DecodeBudget", "DecodedImage", "ImageDecoder", "decode", "load_tensor", "preprocess"]

# Formats photos arrive in. MPO (multi-picture JPEG from cameras) opens through "JPEG".
_PHOTO_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")

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
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})

_WHITE: Final = (255, 255, 255)

# Bytes per pixel Pillow allocates for a mode: three-band and two-band 8-bit modes are padded
# to four bytes, so an "RGB" picture costs 4 bytes per pixel, not 3. Modes not listed take 4.
_STORAGE_BYTES: Final = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

# Rows of a big picture are converted and reduced in bands of about this many bytes.
_BAND_BYTES: Final = 4 * 1024 * 1024
# Releasing at least this much hands freed heap pages back to the OS (see _return_memory).
_TRIM_AFTER_BYTES: Final = 64 * 1024 * 1024

# JPEG markers (ITU T.81 table B.1).
_EOI: Final = 0xD9
_SOS: Final = 0xDA
_STANDALONE: Final = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
_SOF_HUFFMAN_SEQUENTIAL: Final = frozenset({0xC0, 0xC1})
_SOF_PROGRESSIVE: Final = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SOF_ARITHMETIC: Final = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# The first marker after entropy-coded data: FF followed by anything but a stuffed 00, a
# restart marker or another fill FF.
_SCAN_END: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# libjpeg-turbo's Huffman reader tops its 64-bit buffer up to 57 bits before every lookup and
# suspends when it cannot, so a scan needs 7 bytes after its last real bit to finish without a
# marker (checked: 7 pass every valid photo of the dev set, 6 fail some). 0xFE bytes decode as
# long or invalid codes, so they complete as few missing blocks as possible.
_LOOKAHEAD_FILLER: Final = b"\xfe" * 8
# Inserted before the end marker of a multi-scan JPEG: padding to a complete file, data to a cut.
_SCAN_FILLER: Final = b"\xfe" * 64
_ALL_COEFFICIENTS: Final = (1 << 64) - 1

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
    uploaded even when ``image`` was decoded at 1/2, 1/4 or 1/8 scale or reduced after loading.
    """

    image: Image.Image
    width: int
    height: int
    format: str


class DecodeBudget:
    """Bytes of decoding the threads of one process may hold at once.

    A byte-weighted semaphore served first come, first served: a reservation waits until it is
    first in line and fits, so a big decode is never starved by a stream of small ones (which in
    turn wait behind it, at most for one big decode). A reservation larger than the whole budget
    is cut to the budget: such a photo waits until it can run alone rather than never running.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"a decode budget needs a positive capacity, not {capacity}")
        self.capacity = capacity
        self._used = 0
        self._peak = 0
        self._line: deque[int] = deque()
        self._tickets = itertools.count()
        self._changed = threading.Condition()

    @property
    def in_use(self) -> int:
        """Bytes reserved right now."""
        with self._changed:
            return self._used

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once: what the budget actually let through."""
        with self._changed:
            return self._peak

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[int]:
        """Hold ``nbytes`` (cut to the capacity) for the ``with`` block; yields what was held."""
        need = min(max(nbytes, 0), self.capacity)
        with self._changed:
            ticket = next(self._tickets)
            self._line.append(ticket)
            try:
                self._changed.wait_for(
                    lambda: self._line[0] == ticket and self._used + need <= self.capacity
                )
            except BaseException:
                self._line.remove(ticket)
                self._changed.notify_all()
                raise
            self._line.popleft()
            self._used += need
            self._peak = max(self._peak, self._used)
            self._changed.notify_all()  # the next in line may fit as well
        try:
            yield need
        finally:
            with self._changed:
                self._used -= need
                self._changed.notify_all()
            if need >= _TRIM_AFTER_BYTES:
                _return_memory()


@dataclass(frozen=True, slots=True)
class _JpegScan:
    components: tuple[int, ...]
    spectral_start: int
    spectral_end: int
    approximation_low: int


@dataclass(frozen=True, slots=True)
class _JpegLayout:
    """A JPEG's frame and scans, found by walking its markers without decoding."""

    sof: int
    width: int
    height: int
    components: tuple[tuple[int, int, int], ...]  # (id, horizontal, vertical sampling)
    scans: tuple[_JpegScan, ...]
    scan_end: int  # offset of the first marker after the last scan's data

    @property
    def single_scan(self) -> bool:
        """One Huffman scan holding every component: decoded row by row as data arrives."""
        return (
            self.sof in _SOF_HUFFMAN_SEQUENTIAL
            and len(self.scans) == 1
            and set(self.scans[0].components) == {cid for cid, _, _ in self.components}
        )

    @property
    def arithmetic(self) -> bool:
        return self.sof in _SOF_ARITHMETIC

    def missing_scans(self) -> bool:
        """Whether the scans leave a component (or, progressive, a coefficient bit) undecoded."""
        ids = {cid for cid, _, _ in self.components}
        if self.sof not in _SOF_PROGRESSIVE:
            return not ids <= {cid for scan in self.scans for cid in scan.components}
        done = dict.fromkeys(ids, 0)
        for scan in self.scans:
            if scan.approximation_low == 0:  # this scan delivers the bands' last bit
                band = (1 << (scan.spectral_end + 1)) - (1 << scan.spectral_start)
                for cid in scan.components:
                    if cid in done:
                        done[cid] |= band
        return any(bits & _ALL_COEFFICIENTS != _ALL_COEFFICIENTS for bits in done.values())

    def coefficient_bytes(self) -> int:
        """libjpeg's whole-image coefficient buffer, which multi-scan decoding needs whatever the
        DCT scale: 2 bytes per sample of every component at full resolution."""
        if self.single_scan:
            return 0
        hmax = max(h for _, h, _ in self.components)
        vmax = max(v for _, _, v in self.components)
        blocks = 0
        for _, h, v in self.components:
            blocks += math.ceil(math.ceil(self.width * h / hmax) / 8) * math.ceil(
                math.ceil(self.height * v / vmax) / 8
            )
        return blocks * 64 * 2


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a decode will hold, worked out from the header before any pixel is decoded."""

    decoded_bytes: int
    peak_bytes: int
    factor: int


class ImageDecoder:
    """Decodes uploads within ``limits``, sharing one :class:`DecodeBudget` among the threads
    that call it: create one per process (or per pipeline) and call it from every I/O thread.
    """

    def __init__(self, limits: ImageSettings) -> None:
        self.limits = limits
        self.budget = DecodeBudget(limits.decode_budget_bytes)

    def decode(self, data: bytes, min_side: int | None = None) -> DecodedImage:
        """Decode uploaded bytes into an upright RGB image.

        ``min_side`` is the shorter side the caller will resize to: a JPEG is decoded at the
        largest DCT reduction (1/2, 1/4, 1/8) and any photo is then box-reduced by the largest
        whole factor that keeps its shorter side at least that long. Animated GIF/WebP/PNG give
        their first frame. Raises ``EmptyInput``, ``ImageTooLarge``, ``NotAnImage``,
        ``CorruptImage`` or ``TruncatedImage``; nothing else escapes for bad input.
        """
        with self._decoding(data, min_side) as decoded:
            return decoded

    def load_tensor(
        self, data: bytes, spec: PreprocessSpec
    ) -> tuple[npt.NDArray[np.float32], DecodedImage]:
        """Decode and preprocess one photo, holding its budget until the tensor is made; the
        decoded image comes back for its size and format."""
        with self._decoding(data, spec.resize_to) as decoded:
            return preprocess(decoded.image, spec), decoded

    @contextmanager
    def _decoding(self, data: bytes, min_side: int | None) -> Iterator[DecodedImage]:
        limits = self.limits
        if not data:
            raise EmptyInput("empty file (0 bytes)")
        if len(data) > limits.max_bytes:
            raise ImageTooLarge(f"{len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")

        layout = _jpeg_layout(data) if data.startswith(b"\xff\xd8") else None
        source = data
        if layout is not None:
            if layout.missing_scans():
                raise TruncatedImage("truncated JPEG: its scans stop before the picture is whole")
            if layout.single_scan:
                source = data[: layout.scan_end] + _LOOKAHEAD_FILLER

        img = _open(source, data)
        fmt = img.format or "unknown"
        width, height = img.size
        if width <= 0 or height <= 0:
            raise CorruptImage(f"{fmt} header gives an empty size {width}x{height}")
        if width * height > limits.max_pixels:
            raise ImageTooLarge(
                f"{width}x{height} = {width * height} pixels exceeds the limit of "
                f"{limits.max_pixels} pixels"
            )
        wanted = min_side if min_side is not None and min_side > 0 else None
        if wanted is not None and isinstance(img, JpegImagePlugin.JpegImageFile):
            # A square request keeps *both* sides >= min_side, whichever way the photo is turned.
            img.draft("RGB", (wanted, wanted))

        plan = _plan(img, fmt, layout, len(source), wanted)
        if plan.decoded_bytes > limits.max_decoded_bytes:
            shown = f"{width}x{height}" + (
                f" (decoded at {img.width}x{img.height})" if img.size != (width, height) else ""
            )
            raise ImageTooLarge(
                f"{shown} {img.mode} decodes to {plan.decoded_bytes} bytes "
                f"({_storage_bytes(img.mode)} per pixel), over the limit of "
                f"{limits.max_decoded_bytes} bytes"
            )

        with self.budget.reserve(plan.peak_bytes):
            rgb: Image.Image | None = None
            try:
                _load(img, data, fmt, layout)
                if (
                    layout is not None
                    and not layout.single_scan
                    and not layout.arithmetic
                    and _jpeg_cut_short(img, data, layout.scan_end, wanted)
                ):
                    raise TruncatedImage(
                        "truncated JPEG: its last scan ends before the last block of the picture"
                    )
                try:
                    # Read after load: a PNG may keep its eXIf chunk behind the pixel data.
                    orientation = _orientation(img)
                    rgb = _upright_rgb(img, plan.factor, orientation)
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                    raise ImageTooLarge(f"image is too large to decode: {_one_line(exc)}") from exc
                except Exception as exc:  # a failure on untrusted pixels is a property of the bytes
                    raise CorruptImage(f"corrupt {fmt} data: {_one_line(exc)}") from exc
                if orientation in _SWAPS_AXES:
                    width, height = height, width
            finally:
                # Free the full-size pixels now, not when the garbage collector breaks the
                # image's reference cycles: until then they are held outside the budget
                # and several big decodes pile up (a 2 GB peak was measured).
                if rgb is not img:
                    img.close()
            assert rgb is not None  # set, or the block above raised
            yield DecodedImage(image=rgb, width=width, height=height, format=fmt)


def decode(data: bytes, limits: ImageSettings, min_side: int | None = None) -> DecodedImage:
    """:meth:`ImageDecoder.decode` with a budget of its own: fine for one photo at a time;
    concurrent callers must share an :class:`ImageDecoder` for memory to stay bounded."""
    return ImageDecoder(limits).decode(data, min_side)


def load_tensor(
    data: bytes, limits: ImageSettings, spec: PreprocessSpec
) -> tuple[npt.NDArray[np.float32], DecodedImage]:
    """:meth:`ImageDecoder.load_tensor` with a budget of its own (see :func:`decode`)."""
    return ImageDecoder(limits).load_tensor(data, spec)


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


# ------------------------------------------------------------------------------ opening


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
        short = _ends_early(data)
        if short is not None:
            return TruncatedImage(short)
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


def _open(source: bytes, data: bytes) -> Image.Image:
    """Parse the header of ``source`` (``data`` or a JPEG's rearranged copy) only; pixels are
    decoded later, after the limits are checked."""
    try:
        return Image.open(io.BytesIO(source), formats=_open_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own global bound, reached before ours could look (or warnings-as-errors).
        raise ImageTooLarge(f"image is too large to decode: {_one_line(exc)}") from exc
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Exception as exc:  # any parser failure on untrusted bytes is a property of the bytes
        kind = _image_kind(data[:16]) or "image"
        raise _failure(data, f"corrupt or truncated {kind} header", exc) from exc


def _load(img: Image.Image, data: bytes, fmt: str, layout: _JpegLayout | None) -> None:
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image is too large to decode: {_one_line(exc)}") from exc
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
    short = _ends_early(data)
    if short is not None:
        return TruncatedImage(short)
    if _says_truncated(exc):
        kind = _image_kind(data[:16]) or "image"
        return TruncatedImage(f"truncated {kind} data: {_one_line(exc)}")
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and _webp_cut_short(data):
        return TruncatedImage("truncated WEBP: its image data ends before the picture does")
    return CorruptImage(f"{what}: {_one_line(exc)}")


def _orientation(img: Image.Image) -> int:
    """EXIF orientation, 1 when absent or unreadable: bad metadata must not cost the photo."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # malformed EXIF blocks raise anything from struct.error to KeyError
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# --------------------------------------------------------------------------- truncation


def _jpeg_layout(data: bytes) -> _JpegLayout | None:
    """Walk a JPEG's markers to its end-of-image marker, skipping each scan's entropy-coded data.

    Raises ``TruncatedImage`` when the data stops first; gives None for a structure too odd to
    reason about (Pillow then decides), and ignores whatever follows the end marker (cameras
    append previews and padding there).
    """
    size = len(data)
    pos = 2
    sof = 0
    width = height = 0
    components: tuple[tuple[int, int, int], ...] = ()
    scans: list[_JpegScan] = []
    scan_end = 0
    while True:
        marker = data.find(b"\xff", pos)
        if marker < 0:
            raise TruncatedImage("truncated JPEG: the data ends before its end-of-image marker")
        pos = marker + 1
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            raise TruncatedImage("truncated JPEG: the data ends inside a marker")
        code = data[pos]
        pos += 1
        if code == _EOI:
            if not sof or not scans:
                return None
            return _JpegLayout(sof, width, height, components, tuple(scans), scan_end)
        if code in _STANDALONE or code == 0x00:
            continue
        if pos + 2 > size:
            raise TruncatedImage("truncated JPEG: the data ends inside a marker segment")
        length = (data[pos] << 8) | data[pos + 1]
        end = pos + length
        if length < 2:
            return None
        if end > size:
            raise TruncatedImage("truncated JPEG: the data ends inside a marker segment")
        if code in _SOF:
            count = data[pos + 7] if length >= 8 else 0
            if length != 8 + 3 * count or sof:
                return None
            sof = code
            height, width = struct.unpack_from(">HH", data, pos + 3)
            components = tuple(
                (data[at], data[at + 1] >> 4, data[at + 1] & 15) for at in range(pos + 8, end, 3)
            )
            if any(h == 0 or v == 0 for _, h, v in components):
                return None
        elif code == _SOS:
            count = data[pos + 2] if length >= 3 else 0
            if length != 6 + 2 * count or not sof:
                return None
            scans.append(
                _JpegScan(
                    components=tuple(data[at] for at in range(pos + 3, end - 3, 2)),
                    spectral_start=data[end - 3],
                    spectral_end=min(data[end - 2], 63),
                    approximation_low=data[end - 1] & 15,
                )
            )
            found = _SCAN_END.search(data, end)
            if found is None:
                raise TruncatedImage("truncated JPEG: the data ends inside a scan")
            scan_end = found.start()
            while scan_end > end and data[scan_end - 1] == 0xFF:
                scan_end -= 1
            pos = scan_end
            continue
        pos = end


def _jpeg_cut_short(img: Image.Image, data: bytes, scan_end: int, min_side: int | None) -> bool:
    """Whether a multi-scan JPEG's last scan ran out of data: decode it again with filler before
    its end marker and compare. libjpeg skips bytes after a complete scan as padding, so the
    pixels match; a scan that ran out reads the filler as coefficients, so they do not."""
    variant = Image.open(
        io.BytesIO(data[:scan_end] + _SCAN_FILLER + data[scan_end:]), formats=("JPEG",)
    )
    if min_side is not None:
        variant.draft("RGB", (min_side, min_side))
    try:
        variant.load()
    except Exception:  # the original decoded, so only a cut scan can make the filler fatal
        return True
    return not _same_pixels(img, variant)


def _same_pixels(first: Image.Image, second: Image.Image) -> bool:
    """Band by band, so comparing two big pictures makes no full-size copy of either."""
    if first.mode != second.mode or first.size != second.size:
        return False
    width, height = first.size
    rows = max(1, _BAND_BYTES // (width * 4))
    for top in range(0, height, rows):
        box = (0, top, width, min(top + rows, height))
        if first.crop(box).tobytes() != second.crop(box).tobytes():
            return False
    return True


def _ends_early(data: bytes) -> str | None:
    """The reason a PNG, WebP or TIFF container shows its data ending before its structure does,
    or None. Only consulted once Pillow has failed, so it costs nothing on good photos."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        pos = 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack_from(">I4s", data, pos)
            if pos + 12 + length > len(data):
                return f"truncated PNG: the data ends inside its {kind.decode('latin-1')} chunk"
            if kind == b"IEND":
                return None
            pos += 12 + length
        return "truncated PNG: the data ends before its IEND chunk"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        (riff_size,) = struct.unpack_from("<I", data, 4)
        if 8 + riff_size > len(data):
            return "truncated WEBP: the data ends before the size its header gives"
        pos = 12
        while pos + 8 <= 8 + riff_size:
            kind, length = struct.unpack_from("<4sI", data, pos)
            if pos + 8 + length > len(data):
                return f"truncated WEBP: the data ends inside its {kind.decode('latin-1')} chunk"
            pos += 8 + length + (length & 1)
        return None
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        order = "<" if data.startswith(b"II") else ">"
        (directory,) = struct.unpack_from(order + "I", data, 4)
        if directory + 2 > len(data):
            return "truncated TIFF: the data ends before its image directory"
    return None


def _webp_cut_short(data: bytes) -> bool:
    """Whether a still WebP that libwebp refused decodes once its image chunk is padded: then
    the chunk ran out of data (libwebp's "premature end of file") rather than being corrupt.
    Only on the failure path, so the second decode costs nothing on good photos."""
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    if not any(kind in (b"VP8 ", b"VP8L") for kind, _ in chunks) or any(
        kind == b"ANMF" for kind, _ in chunks
    ):
        return False
    body = b"".join(
        _riff_chunk(kind, payload + bytes(len(payload)) if kind in (b"VP8 ", b"VP8L") else payload)
        for kind, payload in chunks
    )
    padded = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
    try:
        with Image.open(io.BytesIO(padded), formats=("WEBP",)) as img:
            img.load()
    except Exception:
        return False
    return True


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


# ------------------------------------------------------------------------------- memory


def _storage_bytes(mode: str) -> int:
    return _STORAGE_BYTES.get(mode, 4)


def _plan(
    img: Image.Image, fmt: str, layout: _JpegLayout | None, source_bytes: int, min_side: int | None
) -> _Plan:
    """Estimate a decode's peak from its header: the decoded picture in Pillow's storage size,
    the decoder's own buffers, and what converting and turning it upright adds."""
    width, height = img.size  # after draft: the size libjpeg will produce
    decoded = width * height * _storage_bytes(img.mode)
    peak = decoded
    if fmt in ("WEBP", "HEIF", "AVIF"):
        peak += width * height * 4 * (1 if fmt == "WEBP" else 2)  # the codec's own RGBA buffer
    if layout is not None:
        peak += source_bytes + layout.coefficient_bytes()
        if not layout.single_scan:
            peak += decoded  # the second decode that checks the last scan
    if fmt == "TIFF":
        peak += _tiff_buffer_bytes(img)
    if layout is None:
        # Pillow's non-JPEG decoders unpack through buffers of their own and glibc keeps the
        # freed pages in per-thread arenas: measured peaks ran to three times the picture, so
        # the reservation counts them and a second huge decode waits instead of overlapping.
        peak += 2 * decoded
    factor = max(1, min(width, height) // min_side) if min_side else 1
    kept = math.ceil(width / factor) * math.ceil(height / factor) * 4
    peak += 2 * kept + 4 * min(width * height * 4, _BAND_BYTES)  # result, upright copy, bands
    return _Plan(decoded_bytes=decoded, peak_bytes=peak, factor=factor)


def _tiff_buffer_bytes(img: Image.Image) -> int:
    """libtiff decodes one strip or tile at a time into a buffer of its own, which a hostile
    file can make as large as the picture (one strip of every row)."""
    tags = getattr(img, "tag_v2", {})
    try:
        samples = int(tags.get(277, 1))
        bits = tags.get(258, (8,))
        bits_per_pixel = sum(bits) if isinstance(bits, tuple) else int(bits) * samples
        if 322 in tags and 323 in tags:
            return int(tags[322]) * int(tags[323]) * bits_per_pixel // 8
        rows = min(int(tags.get(278, img.height)), img.height)
    except (TypeError, ValueError):
        rows, bits_per_pixel = img.height, 32
    return rows * img.width * bits_per_pixel // 8


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, if this is glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def _return_memory() -> None:
    """Hand freed heap pages back to the OS after a big decode. Pillow allocates pictures in
    16 MB blocks, which glibc serves from per-thread arenas once its adaptive mmap threshold has
    grown; freed, they stay in the process (3.6 GB after eight 16-bit TIFFs) until trimmed."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# ---------------------------------------------------------------------------- conversion


def _upright_rgb(img: Image.Image, factor: int, orientation: int) -> Image.Image:
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
    rows = factor * max(1, _BAND_BYTES // (width * 4 * factor))
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
