"""Uploaded bytes → upright RGB picture, within the limits and the process's decode budget.

The byte, pixel and decoded-byte limits are checked from the header before any pixel is decoded;
the decode then holds its share of the :class:`~tagger.imaging.budget.DecodeBudget` until the
picture (or the tensor made from it) is done.

This is the hot path of every worker, so the common case (a baseline RGB JPEG without an
orientation tag) is: walk the markers, parse the header, maybe pick a DCT scale, decode, done —
no conversions and no copies of pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, JpegImagePlugin

from tagger.config import ImageSettings
from tagger.errors import CorruptImage, EmptyInput, ImageTooLarge, TruncatedImage
from tagger.imaging.budget import DecodeBudget, plan_decode, storage_bytes
from tagger.imaging.conversion import SWAPS_AXES, exif_orientation, upright_rgb
from tagger.imaging.opening import load_pixels, one_line, open_image
from tagger.imaging.preprocess import preprocess
from tagger.imaging.truncation import LOOKAHEAD_FILLER, jpeg_cut_short, jpeg_layout
from tagger.schemas import PreprocessSpec

_T = TypeVar("_T")

# Formats whose Pillow plugin can decode a smaller picture than the photo (besides JPEG's
# own): HEVC has no reduced decode, so an embedded thumbnail is the only one (a 12 MP HEIC
# costs 0.8-1 s of libde265 CPU in full; see `tagger bench --phone`).
REDUCED_DRAFTS = frozenset({"HEIF"})


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
        return self.decode_into(data, spec.resize_to, lambda image: preprocess(image, spec))

    def decode_into(
        self, data: bytes, min_side: int | None, make: Callable[[Image.Image], _T]
    ) -> tuple[_T, DecodedImage]:
        """Decode one photo once and turn it into what the callers need (every analyser's
        input, resized from this one picture), holding the photo's share of the budget until
        ``make`` is done; the decoded image comes back for its size and format."""
        with self._decoding(data, min_side) as decoded:
            return make(decoded.image), decoded

    @contextmanager
    def _decoding(self, data: bytes, min_side: int | None) -> Iterator[DecodedImage]:
        limits = self.limits
        if not data:
            raise EmptyInput("empty file (0 bytes)")
        if len(data) > limits.max_bytes:
            raise ImageTooLarge(f"{len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")

        layout = jpeg_layout(data) if data.startswith(b"\xff\xd8") else None
        source = data
        if layout is not None:
            if layout.missing_scans():
                raise TruncatedImage("truncated JPEG: its scans stop before the picture is whole")
            if layout.single_scan:
                source = data[: layout.scan_end] + LOOKAHEAD_FILLER

        img = open_image(source, data)
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
        if wanted is not None and (
            isinstance(img, JpegImagePlugin.JpegImageFile) or fmt in REDUCED_DRAFTS
        ):
            # A square request keeps *both* sides >= min_side, whichever way the photo is turned.
            # JPEG: libjpeg's DCT scaling. HEIF: pillow-heif's draft picks the smallest embedded
            # thumbnail that is a scaled copy of the photo (same orientation, crop and colour
            # profile) with both sides at least that long, and decodes nothing otherwise.
            img.draft("RGB", (wanted, wanted))

        plan = plan_decode(img, fmt, layout, len(source), wanted)
        if plan.decoded_bytes > limits.max_decoded_bytes:
            shown = f"{width}x{height}" + (
                f" (decoded at {img.width}x{img.height})" if img.size != (width, height) else ""
            )
            raise ImageTooLarge(
                f"{shown} {img.mode} decodes to {plan.decoded_bytes} bytes "
                f"({storage_bytes(img.mode)} per pixel), over the limit of "
                f"{limits.max_decoded_bytes} bytes"
            )

        with self.budget.reserve(plan.peak_bytes):
            rgb: Image.Image | None = None
            try:
                load_pixels(img, data, fmt, layout)
                if (
                    layout is not None
                    and not layout.single_scan
                    and not layout.arithmetic
                    and jpeg_cut_short(img, data, layout.scan_end, wanted)
                ):
                    raise TruncatedImage(
                        "truncated JPEG: its last scan ends before the last block of the picture"
                    )
                try:
                    # Read after load: a PNG may keep its eXIf chunk behind the pixel data.
                    orientation = exif_orientation(img)
                    rgb = upright_rgb(img, plan.factor, orientation)
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                    raise ImageTooLarge(f"image is too large to decode: {one_line(exc)}") from exc
                except Exception as exc:  # a failure on untrusted pixels is a property of the bytes
                    raise CorruptImage(f"corrupt {fmt} data: {one_line(exc)}") from exc
                if orientation in SWAPS_AXES:
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
