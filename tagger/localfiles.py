"""Turn the paths a user types into the photo files under them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
)


def is_image_name(name: str) -> bool:
    """By extension only: content sniffing happens at decode time, where a lie is reported."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def find_photos(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given (whatever their name, the user asked for them), folders recursively
    (image extensions only, sorted for a stable order, hidden entries skipped)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                if child.is_file() and is_image_name(child.name):
                    yield child.resolve()
        else:
            yield path.resolve()
