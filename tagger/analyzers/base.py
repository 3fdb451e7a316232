"""What every analyser is to the pipeline: a name, a version, the image size it needs, a
per-photo preparation step and a batched analysis step.

The split mirrors where the work can run: :meth:`Analyzer.prepare` turns the one decoded
picture into this analyser's input (a resized tensor, a thumbnail) on the pipeline's I/O
threads, in parallel and while the decode budget is held; :meth:`Analyzer.analyse` then runs
once per batch on the inference thread, where a model batches best. Nothing in here knows which
analysers exist — that is :mod:`tagger.analyzers.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from PIL import Image

from tagger.schemas import Findings, Tag

Prepared = Any
"""Whatever an analyser's ``prepare`` makes of a photo; only its own ``analyse`` reads it."""


class Analyzer(Protocol):
    """One thing read from the pixels (what it shows, what is in it, its colours, …)."""

    @property
    def name(self) -> str:
        """The registry name, as in ``TAGGER_ANALYZERS``."""
        ...

    @property
    def version(self) -> str:
        """The artifact's checksum version for a model, a version constant for code; a result
        made by another version is outdated."""
        ...

    @property
    def min_side(self) -> int:
        """The shorter side, in pixels, of the decoded picture this analyser needs: the photo
        is decoded once at the largest of these over the analysers that run. 0 means it reads
        no pixels (a label set's head reads the classifier's embedding), so re-running it alone
        needs neither a fetch nor a decode."""
        ...

    @property
    def reads(self) -> tuple[str, ...]:
        """Analysers whose findings this one uses (colours read the detector's boxes): they run
        first, and re-running one of them re-runs this one."""
        ...

    def prepare(self, image: Image.Image) -> Prepared:
        """This analyser's input for one upright RGB photo; called on an I/O thread."""
        ...

    def analyse(
        self, prepared: Sequence[Prepared], context: Sequence[Mapping[str, Findings]]
    ) -> list[Findings]:
        """Findings for a batch, in order. ``context[i]`` holds photo ``i``'s findings so far,
        by analyser name (those named in :attr:`reads` among them when enabled)."""
        ...

    def warm_up(self) -> None:
        """Run once on blank input at process start, so a user's first batch does not pay for
        onnxruntime's first-run allocations."""
        ...


def scored_tags(
    pairs: Sequence[tuple[str, float]], parents: Mapping[str, Sequence[str]] | None = None
) -> list[Tag]:
    """``(name, score)`` pairs as tags, with parents looked up by name."""
    lookup = parents or {}
    return [
        Tag(name=name, score=round(float(score), 6), parents=list(lookup.get(name, ())))
        for name, score in pairs
    ]
