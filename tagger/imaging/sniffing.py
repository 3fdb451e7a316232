"""What bytes Pillow could not open are, going by their first bytes.

Bytes that start like a photo are a photo with a damaged (or cut) header; anything else is named
(PDF, ZIP, HTML, text, ...) so the failure reason is useful to whoever uploaded it. Only
consulted once Pillow has given up, so it costs nothing on good photos.
"""

from __future__ import annotations

from typing import Final

from tagger.errors import CorruptImage, NotAnImage, TaggerError, TruncatedImage
from tagger.imaging.truncation import ends_early

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


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the slice is still text.
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def image_kind(head: bytes) -> str | None:
    """The photo format ``head`` starts like, if any, going by its signature alone."""
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF/AVIF"
    return None


def unidentified(data: bytes) -> TaggerError:
    """Why Pillow could not open ``data``: a photo with a damaged header, or not a photo at all."""
    head = data[:1024]
    kind = image_kind(head)
    if kind is not None:
        short = ends_early(data)
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
