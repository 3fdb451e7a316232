"""The request and answer bodies only the HTTP API has. Everything a photo, a job or a search
returns is the library's own model (:class:`~tagger.schemas.TagResult`,
:class:`~tagger.schemas.JobCounts`, :class:`~tagger.store.SearchHit` …), so the API and the
Python client share one set of schemas."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tagger.errors import ErrorCode
from tagger.schemas import JobCounts, TagResult
from tagger.store import Card, SearchFilters, SearchHit


class ApiError(BaseModel):
    """Every error answer: a code from :class:`~tagger.errors.ErrorCode` a program can
    branch on, a sentence a person can read, and the reference it concerns if any."""

    code: ErrorCode
    message: str
    ref: str | None = None


class JobRequest(BaseModel):
    refs: list[str] = Field(min_length=1, description="s3://bucket/key, https:// URLs")
    force: bool = Field(default=False, description="tag again even if already tagged")


class JobCreated(BaseModel):
    id: str
    total: int = Field(description="photos submitted after dropping duplicates")


class JobStatus(BaseModel):
    id: str
    counts: JobCounts


class RecommendRequest(BaseModel):
    liked: list[str] = Field(min_length=1, max_length=500)
    exclude: list[str] = Field(default_factory=list, max_length=10_000)
    k: int = Field(default=20, ge=1, le=200)
    diversity: float = Field(default=0.3, ge=0.0, le=1.0)
    filters: SearchFilters = Field(default_factory=SearchFilters)
    safe: bool = False


class HitPage(BaseModel):
    """Ranked hits; ``next`` is the cursor of the following page, absent on the last."""

    items: list[SearchHit]
    next: str | None = None


class TextHitPage(HitPage):
    """A text search's hits with what its words were taken to mean."""

    tags: list[str] = Field(default_factory=list)
    colours: list[str] = Field(default_factory=list)
    people: int | None = None
    unknown: list[str] = Field(default_factory=list, description="words no tag matches")


class CardPage(BaseModel):
    items: list[Card]
    next: str | None = None


class ResultPage(BaseModel):
    items: list[TagResult]
    next: str | None = None


class Readiness(BaseModel):
    ready: bool
    broker: str = Field(description="'ok' or why not")
    store: str = Field(description="'ok' or why not")
