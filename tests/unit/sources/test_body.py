"""The bounded reader every source uses."""

from __future__ import annotations

import itertools
import time

import pytest

from tagger.errors import FetchFailed, ImageTooLarge
from tagger.sources.body import read_bounded


def test_declared_size_over_the_limit_is_refused_before_reading() -> None:
    def never(size: int) -> bytes:
        raise AssertionError("read although the declared size was over the limit")

    with pytest.raises(ImageTooLarge, match="5000 bytes, over the 1000-byte limit"):
        read_bounded(never, 5000, "x", 1000, time.monotonic() + 10)


def test_a_body_longer_than_declared_is_still_cut_at_the_limit() -> None:
    endless = itertools.repeat(b"y" * 100)
    with pytest.raises(ImageTooLarge, match="more than 1000 bytes"):
        read_bounded(lambda size: next(endless), 10, "x", 1000, time.monotonic() + 10)


def test_the_deadline_is_checked_between_chunks() -> None:
    chunks = iter([b"a", b"b", b""])
    with pytest.raises(FetchFailed, match="total timeout"):
        read_bounded(lambda size: next(chunks), None, "x", 1000, time.monotonic() - 1)


def test_a_whole_body_within_bounds_is_returned() -> None:
    chunks = iter([b"ab", b"cd", b""])
    assert read_bounded(lambda size: next(chunks), 4, "x", 4, time.monotonic() + 10) == b"abcd"
