"""What the rest of tagger may ask of a result store, independent of the database behind it.

The pipeline, the workers, the client and the backfill depend on this protocol rather than on
:class:`~tagger.store.sql.SqlTagStore`, so a test can hand them an in-memory fake and a later
store (a different database, a remote service) only has to satisfy these methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from tagger.schemas import JobCounts, Status, TagResult

JobItemState = Literal["queued", "done", "failed", "skipped"]
TagKind = Literal["class", "friendly", "parent"]


def normalise_tag(name: str) -> str:
    """One spelling per tag, so ``Cat``, ``cat `` and ``cat`` are stored and searched alike."""
    return name.strip().lower()


class Match(BaseModel):
    """One reason a photo is a hit: a searched tag or colour it has (with its score), its
    people count, or its similarity to the query photo or profile."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["tag", "colour", "people", "similarity"]
    name: str
    score: float


class SearchHit(BaseModel):
    """One photo found; ``score`` ranks hits, ``tags`` are the photo's friendly tags and their
    parents (most likely first) for display, ``why`` says what matched."""

    model_config = ConfigDict(frozen=True)

    ref: str
    score: float
    tags: list[str]
    why: list[Match] = Field(default_factory=list)


class SearchFilters(BaseModel):
    """Conditions every hit must meet, shared by tag search, text search, similar and
    recommend. Tags match friendly tags, parents and class labels; colours are the subject
    colour tags of the colours analyser; ``people`` bounds the detector's person count."""

    model_config = ConfigDict(frozen=True)

    tags: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()
    min_people: int | None = Field(default=None, ge=0)
    max_people: int | None = Field(default=None, ge=0)
    max_nsfw: float | None = Field(default=None, ge=0, le=1)

    def required(self) -> list[str]:
        """Every tag a hit must have, colours included, normalised and without repeats."""
        names = (normalise_tag(name) for name in (*self.tags, *self.colours))
        return list(dict.fromkeys(name for name in names if name))


class Keyset(BaseModel):
    """Where a listing stopped: the sort value and the ref of its last row. Asking for the
    rows after it stays exact while photos are added (an offset would skip or repeat them)
    and costs an index seek however deep the page."""

    model_config = ConfigDict(frozen=True)

    value: str | float
    ref: str


class Card(BaseModel):
    """A photo as a gallery or a listing shows it: its display tags, size and safety score."""

    model_config = ConfigDict(frozen=True)

    ref: str
    tags: list[str]
    width: int | None = None
    height: int | None = None
    nsfw: float | None = None
    tagged_at: datetime


class CardPage(BaseModel):
    """One page of a listing, and where the next one starts (``None``: the last page)."""

    cards: list[Card]
    next: Keyset | None = None


class FacetCount(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    count: int


class Facets(BaseModel):
    """How the tagged photos divide, so a gallery can offer filters that find something:
    the most common tags and subject colours, photos by number of people, and by safety."""

    total: int
    tags: list[FacetCount]
    colours: list[FacetCount]
    people: list[FacetCount] = Field(description="'0', '1', '2', '3+' people")
    safety: list[FacetCount] = Field(description="'safe', 'flagged', 'unscored'")


class PhotoState(BaseModel):
    """What the store already knows about a photo: enough to decide whether to tag it again
    without loading its classes and tags."""

    model_config = ConfigDict(frozen=True)

    status: Status
    etag: str | None = None
    model_version: str | None = None
    analyzers: dict[str, str] = Field(
        default_factory=dict, description="analyser name -> version of the stored result"
    )

    def is_tagged_by(self, etag: str | None, versions: Mapping[str, str]) -> bool:
        """The idempotence rule: the same content was already tagged by every enabled
        analyser (name -> version) at its current version; findings of an analyser that is
        no longer enabled do not make a photo outdated.

        A missing ETag never matches, because without it a changed photo cannot be told apart
        from the one that was tagged; re-tagging costs time, skipping a changed photo costs a
        wrong answer.
        """
        return etag is not None and self.etag == etag and self.is_current(versions)

    def is_current(self, versions: Mapping[str, str]) -> bool:
        """Tagged by every enabled analyser (name -> version) at its current version."""
        return (
            self.status is Status.TAGGED
            and bool(versions)
            and all(self.analyzers.get(name) == version for name, version in versions.items())
        )


@runtime_checkable
class TagStore(Protocol):
    """Results, job progress and resumable cursors, all in one transactional store."""

    def save(self, results: Sequence[TagResult]) -> None:
        """Record results; a photo saved again is replaced wholesale, old tags included."""
        ...

    def get(self, ref: str) -> TagResult | None: ...

    def get_many(self, refs: Sequence[str]) -> dict[str, TagResult]: ...

    def search(
        self, tags: Sequence[str], limit: int = 50, filters: SearchFilters | None = None
    ) -> list[SearchHit]:
        """Tagged photos having *all* of ``tags`` (friendly, parent or class label) and meeting
        ``filters``, best first."""
        ...

    def flagged(
        self, threshold: float, limit: int = 100, after: Keyset | None = None
    ) -> list[TagResult]:
        """Tagged photos whose safety score reaches ``threshold``, most likely first;
        ``after`` continues a listing (the score and ref of its last photo)."""
        ...

    def similar(
        self, ref: str, k: int = 20, filters: SearchFilters | None = None
    ) -> list[SearchHit]:
        """The ``k`` photos most like ``ref`` by their signatures, best first."""
        ...

    def nearest(
        self,
        vector: npt.ArrayLike,
        k: int = 20,
        filters: SearchFilters | None = None,
        exclude: Sequence[str] = (),
    ) -> list[SearchHit]:
        """The ``k`` tagged photos whose signatures are nearest to ``vector``, best first."""
        ...

    def signatures(self, refs: Sequence[str]) -> dict[str, list[float]]:
        """The stored signatures of those of ``refs`` that have one."""
        ...

    def existing_tags(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` that some photo has as a tag (words read by OCR, custom labels,
        class ids: tags a query vocabulary cannot know in advance)."""
        ...

    def failures(self, limit: int = 100, after: Keyset | None = None) -> list[TagResult]:
        """Failed photos, most recent first; ``after`` continues a listing (the time and
        ref of its last photo)."""
        ...

    def recent(
        self, limit: int = 50, filters: SearchFilters | None = None, after: Keyset | None = None
    ) -> CardPage:
        """Tagged photos meeting ``filters``, most recently tagged first."""
        ...

    def facets(self, limit: int = 30, safety_threshold: float = 0.8) -> Facets:
        """The ``limit`` most common tags and colours, and photos by people and safety."""
        ...

    def known(self, refs: Sequence[str]) -> dict[str, PhotoState]:
        """State of those of ``refs`` the store has seen; unknown refs are absent."""
        ...

    def counts(self) -> dict[str, int]:
        """Photos per status (every status present, zero included)."""
        ...

    def add_job(self, job_id: str, refs: Sequence[str]) -> None:
        """Register ``refs`` as queued items of ``job_id``; items already marked keep their
        state, so a job may be added in several calls."""
        ...

    def mark_job_items(self, job_id: str, states: Mapping[str, str]) -> None: ...

    def job_counts(self, job_id: str) -> JobCounts: ...

    def get_cursor(self, name: str) -> str | None: ...

    def set_cursor(self, name: str, value: str | None) -> None:
        """Remember ``value`` under ``name``; ``None`` forgets it."""
        ...

    def close(self) -> None: ...
