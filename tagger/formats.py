"""The one list of photo file names and formats tagger reads.

Local folder scans, S3 event filters, the backfill listing and the decoder all ask here, so a
format the decoder opens is never skipped by a scan and a suffix a scan accepts is always one
the decoder knows.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Final

# Pillow format name → the file suffixes photos in it carry. MPO (multi-picture JPEG from
# cameras) opens through "JPEG"; AVIF needs a libavif-enabled Pillow (or pillow-heif).
PHOTO_FORMATS: Final = MappingProxyType(
    {
        "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
        "PNG": (".png",),
        "WEBP": (".webp",),
        "GIF": (".gif",),
        "BMP": (".bmp",),
        "TIFF": (".tif", ".tiff"),
        "HEIF": (".heic", ".heif"),
        "AVIF": (".avif",),
    }
)

IMAGE_SUFFIXES: Final = frozenset(s for suffixes in PHOTO_FORMATS.values() for s in suffixes)


def is_image_name(name: str) -> bool:
    """By extension only: content sniffing happens at decode time, where a lie is reported."""
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES
