"""The file source: every bad path is a permanent, typed failure naming the path, quickly.

Symlink loops, dangling links, directories, FIFOs, sockets, devices and unreadable files are
each refused with a one-line reason; nothing blocks, nothing raises anything but TaggerError.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tagger.errors import (
    AccessDenied,
    FetchFailed,
    ImageTooLarge,
    NotAnImage,
    NotFound,
    RefusedReference,
    TaggerError,
)
from tagger.schemas import PhotoRef
from tagger.sources import Fetcher
from tests.unit.sources.conftest import make_settings

not_as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode"
)


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Fetcher]:
    with Fetcher(make_settings(tmp_path), allow_local_paths=True) as fetcher:
        yield fetcher


def failure(fetcher: Fetcher, ref: PhotoRef) -> TaggerError:
    """The error fetching ``ref`` raises, checked for what every bad path must give: a typed,
    permanent error whose one-line reason names the path, within a second."""
    started = time.monotonic()
    with pytest.raises(TaggerError) as caught:
        fetcher.fetch(ref)
    error = caught.value
    assert time.monotonic() - started < 1
    assert error.permanent, error.reason
    assert "\n" not in error.reason
    assert error.reason.startswith(ref.uri), error.reason
    return error


def test_local_paths_only_when_allowed(tmp_path: Path, photo: bytes) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(photo)
    ref = PhotoRef(uri=str(path))
    with pytest.raises(RefusedReference, match="local paths"):
        Fetcher(make_settings(tmp_path)).fetch(ref)

    fetched = Fetcher(make_settings(tmp_path), allow_local_paths=True).fetch(ref)
    assert (fetched.data, fetched.etag, fetched.ref) == (photo, None, str(path))

    by_setting = make_settings(tmp_path, allow_local_paths=True)
    assert Fetcher(by_setting).fetch(PhotoRef(uri=f"file://{path}")).data == photo
    with pytest.raises(RefusedReference):
        Fetcher(by_setting, allow_local_paths=False).fetch(ref)


def test_local_path_failures(tmp_path: Path, photo: bytes) -> None:
    fetcher = Fetcher(make_settings(tmp_path, max_bytes=len(photo) - 1), allow_local_paths=True)
    with pytest.raises(NotFound):
        fetcher.fetch(PhotoRef(uri=str(tmp_path / "absent.jpg")))
    with pytest.raises(NotAnImage, match="directory"):
        fetcher.fetch(PhotoRef(uri=str(tmp_path)))
    big = tmp_path / "big.jpg"
    big.write_bytes(photo)
    with pytest.raises(ImageTooLarge):
        fetcher.fetch(PhotoRef(uri=str(big)))


# -- every bad path ------------------------------------------------------------------------------


def test_symlink_loop_made_after_the_reference_is_not_found(
    tmp_path: Path, reader: Fetcher
) -> None:
    path = tmp_path / "a.jpg"
    ref = PhotoRef(uri=str(path))  # valid while nothing is there
    path.symlink_to("a.jpg")
    error = failure(reader, ref)
    assert isinstance(error, NotFound)
    assert "symlink loop" in error.reason


def test_chain_loop_and_looping_parent_are_not_found(tmp_path: Path, reader: Fetcher) -> None:
    a, b, folder = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "d"
    refs = [PhotoRef(uri=str(a)), PhotoRef(uri=str(folder / "x.jpg"))]
    a.symlink_to(b)
    b.symlink_to(a)
    folder.symlink_to(folder)
    for ref in refs:
        error = failure(reader, ref)
        assert isinstance(error, NotFound)
        assert "symlink loop" in error.reason


def test_dangling_symlink_names_its_target(tmp_path: Path, reader: Fetcher) -> None:
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    ref = PhotoRef(uri=str(link))
    assert ref.uri == str(tmp_path.resolve() / "gone.jpg")
    error = failure(reader, ref)
    assert isinstance(error, NotFound)
    assert error.reason.endswith("no such file")


def test_symlink_to_a_photo_is_read(tmp_path: Path, reader: Fetcher, photo: bytes) -> None:
    (tmp_path / "real.jpg").write_bytes(photo)
    (tmp_path / "link.jpg").symlink_to("real.jpg")
    assert reader.fetch(PhotoRef(uri=str(tmp_path / "link.jpg"))).data == photo


def test_a_parent_that_is_a_file_is_not_found(tmp_path: Path, reader: Fetcher) -> None:
    (tmp_path / "file").write_bytes(b"x")
    assert isinstance(failure(reader, PhotoRef(uri=str(tmp_path / "file" / "x.jpg"))), NotFound)


@pytest.mark.timeout(10)
def test_fifo_is_refused_without_blocking(tmp_path: Path, reader: Fetcher) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    error = failure(reader, PhotoRef(uri=str(fifo)))
    assert isinstance(error, NotAnImage)
    assert "FIFO" in error.reason


@pytest.mark.timeout(10)
def test_fifo_swapped_in_after_the_check_is_refused_on_the_opened_descriptor(
    tmp_path: Path, reader: Fetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path passes ``stat`` as a regular file, then is a FIFO when opened: O_NONBLOCK keeps
    the open from waiting for a writer and ``fstat`` on the descriptor catches it."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    real_stat = os.stat
    regular = real_stat(tmp_path / ".." / tmp_path.name)  # any stat_result, mode replaced below

    def stat_says_regular(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path) == str(fifo):
            fields = list(regular)
            fields[stat.ST_MODE] = stat.S_IFREG | 0o644
            fields[stat.ST_SIZE] = 10
            return os.stat_result(fields)
        return real_stat(path, *args, **kwargs)

    ref = PhotoRef(uri=str(fifo))
    monkeypatch.setattr(os, "stat", stat_says_regular)
    error = failure(reader, ref)
    assert isinstance(error, NotAnImage)
    assert "FIFO" in error.reason


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_devices_are_refused_without_reading(reader: Fetcher, device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    error = failure(reader, PhotoRef(uri=device))
    assert isinstance(error, NotAnImage)
    assert "character device" in error.reason


def test_socket_is_refused(reader: Fetcher) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # AF_UNIX paths are short
        path = os.path.join(short, "s.jpg")
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            error = failure(reader, PhotoRef(uri=path))
    assert isinstance(error, NotAnImage)
    assert "socket" in error.reason


@not_as_root
def test_unreadable_file_is_access_denied(tmp_path: Path, reader: Fetcher, photo: bytes) -> None:
    path = tmp_path / "secret.jpg"
    path.write_bytes(photo)
    path.chmod(0)
    try:
        error = failure(reader, PhotoRef(uri=str(path)))
    finally:
        path.chmod(0o600)
    assert isinstance(error, AccessDenied)


@not_as_root
def test_file_in_an_unreadable_folder_is_access_denied(
    tmp_path: Path, reader: Fetcher, photo: bytes
) -> None:
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo)
    ref = PhotoRef(uri=str(folder / "a.jpg"))
    folder.chmod(0)
    try:
        error = failure(reader, ref)
    finally:
        folder.chmod(0o700)
    assert isinstance(error, AccessDenied)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (errno.EACCES, AccessDenied),
        (errno.EPERM, AccessDenied),
        (errno.EISDIR, NotAnImage),
        (errno.ELOOP, NotFound),
        (errno.ENXIO, NotAnImage),
    ],
)
def test_open_failures_become_typed_permanent_errors(
    tmp_path: Path,
    reader: Fetcher,
    photo: bytes,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    error: type[TaggerError],
) -> None:
    """The errno mapping, also where the permission tests are skipped (running as root)."""
    path = tmp_path / "a.jpg"
    path.write_bytes(photo)

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(os, "open", refuse)
    assert type(failure(reader, PhotoRef(uri=str(path)))) is error


def test_other_io_errors_are_transient(
    tmp_path: Path, reader: Fetcher, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(photo)

    def broken(fd: int, size: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "read", broken)
    with pytest.raises(FetchFailed, match="Input/output error") as caught:
        reader.fetch(PhotoRef(uri=str(path)))
    assert caught.value.permanent is False


def test_odd_file_names_stay_on_one_line(tmp_path: Path, reader: Fetcher) -> None:
    ref = PhotoRef(uri=str(tmp_path / "two\nlines.jpg"))
    with pytest.raises(NotFound) as caught:
        reader.fetch(ref)
    assert "\n" not in caught.value.reason
    assert "two\\nlines.jpg" in caught.value.reason


def test_a_growing_file_is_cut_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size stat reports is checked first, but what is read is counted too."""
    path = tmp_path / "grows.jpg"
    path.write_bytes(b"x" * 10)
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, n) or b"y" * n)
    fetcher = Fetcher(make_settings(tmp_path, max_bytes=100), allow_local_paths=True)
    with pytest.raises(ImageTooLarge, match="more than 100 bytes"):
        fetcher.fetch(PhotoRef(uri=str(path)))
