"""Local photo files, for ``tagger tag`` and for workers allowed to read paths.

Any path may be handed in, so nothing about it is trusted: it may loop, dangle, be unreadable,
or be a directory, a FIFO (opening one for reading blocks until a writer comes), a socket or a
device (``/dev/zero`` never ends). Each of these is a permanent, typed failure naming the path,
never a hang, a traceback or a retry.

The file is checked with ``stat`` before it is opened, so a FIFO or a device is never opened at
all (opening some devices has effects), and checked again with ``fstat`` on the descriptor
actually opened, since the path may have been replaced in between. ``O_NONBLOCK`` makes even
that racing open of a FIFO return at once. Symlinks are followed: the reference was resolved
when it was made (see :class:`~tagger.schemas.PhotoRef`), and whether local paths may be read
at all is the boundary (``fetch.allow_local_paths``), not which names lead to them.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from functools import partial
from types import MappingProxyType

from tagger.config import Settings
from tagger.errors import (
    AccessDenied,
    FetchFailed,
    NotAnImage,
    NotFound,
    RefusedReference,
    TaggerError,
)
from tagger.schemas import PhotoRef
from tagger.sources.base import Fetched
from tagger.sources.body import read_bounded

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_NOT_REGULAR: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a FIFO (named pipe)"),
    (stat.S_ISSOCK, "is a socket"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
)

# errno → (error class, reason): what each failure of stat, open or read means for the photo.
_OS_ERRORS: MappingProxyType[int, tuple[type[TaggerError], str]] = MappingProxyType(
    {
        errno.ENOENT: (NotFound, "no such file"),
        errno.ENOTDIR: (NotFound, "a parent in the path is not a directory"),
        errno.ELOOP: (NotFound, "symlink loop (too many levels of symbolic links)"),
        errno.ENAMETOOLONG: (NotFound, "file name too long"),
        errno.EACCES: (AccessDenied, "permission denied"),
        errno.EPERM: (AccessDenied, "operation not permitted"),
        errno.EISDIR: (NotAnImage, "is a directory"),
        errno.ENXIO: (NotAnImage, "not a regular file (no device or reader behind it)"),
        errno.ENODEV: (NotAnImage, "not a regular file (a device)"),
    }
)


class FileSource:
    """Reads a path when local paths are allowed."""

    def __init__(self, settings: Settings) -> None:
        self._allowed = settings.fetch.allow_local_paths
        self._limit = settings.image.max_bytes
        self._timeout = settings.fetch.total_timeout

    def fetch(self, ref: PhotoRef) -> Fetched:
        path = ref.uri
        where = _shown(path)
        if not self._allowed:
            raise RefusedReference(f"{where}: local paths are not allowed here")
        deadline = time.monotonic() + self._timeout
        try:
            _check_regular(os.stat(path).st_mode, where)
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            raise _os_error(where, exc) from None
        try:
            info = os.fstat(fd)
            _check_regular(info.st_mode, where)  # the path may have changed since the stat
            data = read_bounded(partial(os.read, fd), info.st_size, where, self._limit, deadline)
        except OSError as exc:
            raise _os_error(where, exc) from None
        finally:
            os.close(fd)
        return Fetched(ref=ref.uri, data=data, etag=None)

    def head(self, ref: PhotoRef) -> str | None:
        """None: a file's mtime is no version (copies keep it, edits within a second share
        it), so its version is its content hash."""
        return None

    def close(self) -> None:
        """Nothing is held open between photos."""


def _check_regular(mode: int, where: str) -> None:
    if stat.S_ISREG(mode):
        return
    for is_kind, what in _NOT_REGULAR:
        if is_kind(mode):
            raise NotAnImage(f"{where}: {what}, not a photo file")
    raise NotAnImage(f"{where}: not a regular file")


def _os_error(where: str, exc: OSError) -> TaggerError:
    """A permanent, typed failure for what a bad path does; anything else (EIO, too many open
    files, a stale NFS handle) may pass, so it is transient."""
    known = _OS_ERRORS.get(exc.errno or 0)
    if known is not None:
        error, reason = known
        return error(f"{where}: {reason}")
    return FetchFailed(f"{where}: {exc.strerror or type(exc).__name__}")


def _shown(path: str) -> str:
    """The path on one line: a name holding a newline or undecodable bytes is escaped."""
    return path if path.isprintable() else ascii(path)
