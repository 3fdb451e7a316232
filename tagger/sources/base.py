"""What every source shares: the bytes it hands back and the small protocol it implements.

A source reads one kind of reference (one scheme). The pipeline only ever talks to the
:class:`~tagger.sources.registry.Fetcher`, which picks the source by scheme, so a new scheme
is a new module and one line in the registry, and no caller changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from tagger import schemas
from tagger.config import Settings
from tagger.schemas import PhotoRef
from tagger.sources.urlsafety import redact_url


class Fetched(BaseModel):
    """A photo's raw bytes and the version marker its source gave them, if any."""

    model_config = ConfigDict(frozen=True)

    ref: str
    data: bytes = Field(repr=False)  # never dump megabytes into a log line
    etag: str | None = Field(
        default=None, description="S3 or HTTP ETag without quotes; None for files"
    )


class Source(Protocol):
    """Reads references of one scheme. Shared by a worker's download threads, so it must be
    thread-safe; it fails only with :class:`~tagger.errors.TaggerError` subclasses whose
    reasons are safe to store (no credentials, no presigned query strings)."""

    def fetch(self, ref: PhotoRef) -> Fetched:
        """The photo's bytes, bounded by ``image.max_bytes`` and ``fetch.total_timeout``."""
        ...

    def head(self, ref: PhotoRef) -> str | None:
        """The version marker (ETag) without downloading, when the scheme has a cheap way to
        ask; None otherwise, and the pipeline then knows the version only from the content."""
        ...

    def close(self) -> None:
        """Release connections; the source may be used again afterwards and reconnects."""
        ...


SourceFactory = Callable[[Settings], Source]
"""How the registry makes a source: its class, called with the Settings."""


def clean_etag(value: str | None) -> str | None:
    """``"abc"`` → ``abc`` and ``W/"abc"`` → ``W/abc``: the same object always gives the same
    string, which is what the idempotency key needs."""
    if not value:
        return None
    value = value.strip()
    weak = value.startswith("W/")
    inner = value[2:] if weak else value
    inner = inner.strip('"')
    return f"W/{inner}" if weak else inner or None


def shown(ref: PhotoRef) -> str:
    """How a reason names a reference: URLs through :func:`redact_url` (the whole query goes,
    since an unknown parameter may be a secret too); bucket keys and paths as they are."""
    return redact_url(ref.uri) if schemas.REF_SCHEMES[ref.kind] == "url" else ref.uri
