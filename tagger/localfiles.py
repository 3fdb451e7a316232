"""Turn the paths a user types into the photo files under them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tagger.formats import is_image_name

__all__ = ["find_photos", "is_image_name"]


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
                    yield child.absolute()
        else:
            # Not resolved here: a symlink loop or a dangling link is reported on that photo
            # (the reference parser and the file source give it a typed failure), not raised.
            yield path.absolute()
