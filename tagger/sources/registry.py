"""One Source per scheme, and the Fetcher that picks among them.

Adding a scheme (say ``gs://``) is a new module with its Source class, one line in
:data:`SOURCES`, and one entry in :data:`tagger.schemas.REF_SCHEMES` (the bottom layer cannot
import this one, and a reference is validated when it is made, long before any source
exists); a unit test fails when the two tables disagree.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from tagger.config import Settings
from tagger.errors import FetchFailed, RefusedReference, TaggerError
from tagger.schemas import PhotoRef
from tagger.sources.base import Fetched, Source, SourceFactory, shown
from tagger.sources.file import FileSource
from tagger.sources.http import HttpSource
from tagger.sources.s3 import S3Source

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SOURCES: Mapping[str, SourceFactory] = MappingProxyType(
    {
        "s3": S3Source,
        "https": HttpSource,
        "http": HttpSource,  # refused per hop unless fetch.allow_http
        "file": FileSource,
    }
)


class Fetcher:
    """Fetches photo bytes for the pipeline; one per process, shared by the download threads.

    Each source is made on first use (so a URL-only run never builds an S3 client) and shared
    by every scheme that names the same class (one pool for http and https).

    It also counts the bytes it read, by scheme, for whoever owns the process to export
    (:meth:`take_fetched_bytes`; the worker feeds ``tagger_fetched_bytes_total``): sources stay
    free of any metrics library, and so does the client, which imports this package.
    """

    def __init__(self, settings: Settings, *, allow_local_paths: bool | None = None) -> None:
        if allow_local_paths is not None:
            fetch = settings.fetch.model_copy(update={"allow_local_paths": allow_local_paths})
            settings = settings.model_copy(update={"fetch": fetch})
        self._settings = settings
        self._sources: dict[SourceFactory, Source] = {}
        self._lock = threading.Lock()
        self._fetched: Counter[str] = Counter()

    def fetch(self, ref: PhotoRef) -> Fetched:
        """The photo's bytes; raises only TaggerError subclasses."""
        try:
            fetched = self._source(ref.kind, ref).fetch(ref)
        except TaggerError:
            raise
        except Exception as exc:  # the pipeline's contract: typed errors only
            raise FetchFailed(f"{shown(ref)}: unexpected {type(exc).__name__}") from None
        with self._lock:
            self._fetched[ref.kind] += len(fetched.data)
        return fetched

    def take_fetched_bytes(self) -> dict[str, int]:
        """Bytes read by scheme since the last call (or since the Fetcher was made)."""
        with self._lock:
            taken, self._fetched = dict(self._fetched), Counter()
        return taken

    def head(self, ref: PhotoRef) -> str | None:
        """The version marker without downloading (the S3 ETag), so a repeat can be skipped
        cheaply; None for URLs and files, whose version is only known from their content."""
        try:
            return self._source(ref.kind, ref).head(ref)
        except TaggerError:
            raise
        except Exception as exc:  # typed errors only, as for fetch
            raise FetchFailed(f"{shown(ref)}: unexpected {type(exc).__name__}") from None

    def close(self) -> None:
        with self._lock:
            sources, self._sources = list(self._sources.values()), {}
        for source in sources:
            source.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def s3_client(self) -> S3Client:
        """The one boto3 client of this Fetcher, for callers that list or stub S3 directly."""
        source = self._source("s3")
        assert isinstance(source, S3Source)  # the registry says so; a mistake must be loud
        return source.client

    def _source(self, scheme: str, ref: PhotoRef | None = None) -> Source:
        factory = SOURCES.get(scheme)
        if factory is None:
            named = shown(ref) if ref is not None else scheme
            raise RefusedReference(f"{named}: no source reads {scheme!r} references")
        with self._lock:
            source = self._sources.get(factory)
            if source is None:
                source = self._sources[factory] = factory(self._settings)
            return source
