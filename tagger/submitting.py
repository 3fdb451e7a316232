"""What the event listeners and the backfill need of whoever enqueues work.

A protocol rather than :class:`tagger.client.TaggerClient` itself, so the pure parts (the
event parser, the backfill's decisions) never import the broker and the store, and tests can
count submissions with a recording fake. One protocol for every caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class SubmittedJob(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def total(self) -> int: ...


class Submitter(Protocol):
    def submit(self, refs: Iterable[str], *, force: bool = False) -> SubmittedJob: ...

    def queue_depth(self) -> int: ...
