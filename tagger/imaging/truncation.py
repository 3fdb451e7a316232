"""Refusing files whose data ends before their picture does.

A file whose data ends before its picture does is refused (``TruncatedImage``) rather than
tagged from grey-filled pixels, even when an end marker was appended. Pillow's switch for
accepting such files, ``ImageFile.LOAD_TRUNCATED_IMAGES``, stays off, which fails files that
simply stop; but libjpeg treats *any* marker inside a scan as the end of its data, pads the rest
of the picture with zeros and only issues a warning Pillow throws away. So a JPEG is walked
marker by marker first (cheap: the entropy-coded data is skipped with one regex search per
scan). A baseline/sequential JPEG with one scan is then decoded from its scan data *without* the
marker that ends it, followed by a few filler bytes: libjpeg finishes every block only if the
data holds every block, and otherwise suspends waiting for more, which Pillow reports as
truncated. Progressive (and other multi-scan) JPEGs read to their end marker before producing a
row, so for them the scans must cover every coefficient, and the picture is decoded a second
time with filler bytes before the end marker: a complete file skips them as padding and yields
the same pixels, a cut one decodes them as data and does not. PNG, GIF, TIFF and BMP decoders
stop on short data themselves; WebP's container sizes give a cut away.
"""

from __future__ import annotations

import io
import math
import re
import struct
from dataclasses import dataclass
from typing import Final

from PIL import Image

from tagger.errors import TruncatedImage
from tagger.imaging.conversion import BAND_BYTES

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
LOOKAHEAD_FILLER: Final = b"\xfe" * 8
# Inserted before the end marker of a multi-scan JPEG: padding to a complete file, data to a cut.
_SCAN_FILLER: Final = b"\xfe" * 64
_ALL_COEFFICIENTS: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class _JpegScan:
    components: tuple[int, ...]
    spectral_start: int
    spectral_end: int
    approximation_low: int


@dataclass(frozen=True, slots=True)
class JpegLayout:
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


def jpeg_layout(data: bytes) -> JpegLayout | None:
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
            return JpegLayout(sof, width, height, components, tuple(scans), scan_end)
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


def jpeg_cut_short(img: Image.Image, data: bytes, scan_end: int, min_side: int | None) -> bool:
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
    rows = max(1, BAND_BYTES // (width * 4))
    for top in range(0, height, rows):
        box = (0, top, width, min(top + rows, height))
        if first.crop(box).tobytes() != second.crop(box).tobytes():
            return False
    return True


def ends_early(data: bytes) -> str | None:
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


def webp_cut_short(data: bytes) -> bool:
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
