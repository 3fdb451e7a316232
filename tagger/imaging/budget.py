"""Bounding the memory decodes take: per photo from its header, per process by a budget.

One worker process decodes on several I/O threads at once, so a per-photo limit alone does not
bound it: eight 16-bit 9000x9000 TIFFs of 250 KB each are each "allowed" and together take
gigabytes. An :class:`~tagger.imaging.ImageDecoder` therefore owns a :class:`DecodeBudget`, a
byte-weighted semaphore: every decode reserves an estimate of its peak (decoded pixels in
Pillow's storage size, the decoder's own buffers, the conversions after it, see
:func:`plan_decode`) before a pixel is decoded and gives it back once its tensor is made, so big
decodes wait for each other while small ones flow. Freed heap pages of a big decode are handed
back to the OS (``malloc_trim``) rather than kept in glibc's per-thread arenas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from PIL import Image

from tagger.imaging.conversion import BAND_BYTES
from tagger.imaging.truncation import JpegLayout

# Bytes per pixel Pillow allocates for a mode: three-band and two-band 8-bit modes are padded
# to four bytes, so an "RGB" picture costs 4 bytes per pixel, not 3. Modes not listed take 4.
_STORAGE_BYTES: Final = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Releasing at least this much hands freed heap pages back to the OS (see _return_memory).
_TRIM_AFTER_BYTES: Final = 64 * 1024 * 1024


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
class DecodePlan:
    """What a decode will hold, worked out from the header before any pixel is decoded."""

    decoded_bytes: int
    peak_bytes: int
    factor: int


def storage_bytes(mode: str) -> int:
    return _STORAGE_BYTES.get(mode, 4)


def plan_decode(
    img: Image.Image, fmt: str, layout: JpegLayout | None, source_bytes: int, min_side: int | None
) -> DecodePlan:
    """Estimate a decode's peak from its header: the decoded picture in Pillow's storage size,
    the decoder's own buffers, and what converting and turning it upright adds."""
    width, height = img.size  # after draft: the size libjpeg will produce
    decoded = width * height * storage_bytes(img.mode)
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
    peak += 2 * kept + 4 * min(width * height * 4, BAND_BYTES)  # result, upright copy, bands
    return DecodePlan(decoded_bytes=decoded, peak_bytes=peak, factor=factor)


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
