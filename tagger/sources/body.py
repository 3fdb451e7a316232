"""Reading a body of unknown honesty: whatever the source announces, never more than the limit
and never past the deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

from tagger.errors import FetchFailed, ImageTooLarge

CHUNK = 64 * 1024


def read_bounded(
    read: Callable[[int], bytes], declared: int | None, where: str, limit: int, deadline: float
) -> bytes:
    """One body, S3, HTTP or file: refused up front when its declared size is over the limit,
    then counted chunk by chunk, so a lying or missing length, a file that grows while it is
    read and a trickling sender are caught too. ``read`` returns ``b""`` at the end."""
    if declared is not None and declared > limit:
        raise ImageTooLarge(f"{where}: {declared} bytes, over the {limit}-byte limit")
    data = bytearray()
    while chunk := read(CHUNK):
        data += chunk
        if len(data) > limit:
            raise ImageTooLarge(f"{where}: more than {limit} bytes")
        if time.monotonic() > deadline:
            raise FetchFailed(f"{where}: reading took longer than the total timeout")
    return bytes(data)
