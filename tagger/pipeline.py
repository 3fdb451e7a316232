"""The one tagging flow: known? → fetch → decode → preprocess → ONNX batch → tags → store.

:func:`tag_and_store` is the flow every entry point that keeps results runs — the local CLI and
the Celery task — and :meth:`Pipeline.tag_stream` its stateless core, which the benchmark and
the eval call directly. A photo that fails at any step becomes a ``failed`` TagResult with an
:class:`~tagger.errors.ErrorCode` and a one-line reason; it never fails the rest of its batch.
The pipeline holds the per-process resources (model session, fetcher) and is built once per
process, which is why ``tag_batch`` is a method rather than a free function.

Idempotence is decided in one place, :meth:`tagger.store.PhotoState.is_tagged_by` (same ref
identity, same ETag or content hash, same model version), asked here before any download and
again once the content is known.

Photos are keyed in the store by :attr:`PhotoRef.identity` — the reference without signature
or credential query parameters — while the full reference, presigned URL included, only
travels in the task message and is used to fetch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from tagger import metrics
from tagger.analyzers.base import Analyzer
from tagger.analyzers.registry import create_analyzers, rerun_closure
from tagger.config import Settings
from tagger.errors import ConfigError, ErrorCode, StoreUnavailable, TaggerError
from tagger.imaging import ImageDecoder
from tagger.schemas import Findings, PhotoRef, Status, TagResult, combined_version
from tagger.sources import Fetcher, redact_url
from tagger.store import PhotoState, TagStore
from tagger.store.writeback import S3WriteBack
from tagger.thumbnails import ThumbnailStore, ThumbnailStoreError, decode_side, make_thumbnail

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class Loaded:
    """A photo ready for its analysers, or the result it already has (failed or skipped).

    ``prepared`` holds each analyser's input by name; ``reused`` the findings of analysers
    whose stored result is current, kept as they are when only outdated analysers re-run;
    ``thumbnail`` the WebP made from the same decode, when asked for.
    """

    ref: str
    prepared: dict[str, Any] = field(default_factory=dict)
    reused: dict[str, Findings] = field(default_factory=dict)
    etag: str | None = None
    width: int | None = None
    height: int | None = None
    result: TagResult | None = None
    thumbnail: bytes | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A photo's result and, for a photo tagged from its pixels when thumbnails were asked
    for, its thumbnail: what :func:`tag_and_store` keeps, while ``tag_stream`` callers get
    the results alone."""

    result: TagResult
    thumbnail: bytes | None = None


def content_tag(data: bytes) -> str:
    """Stand-in for an ETag where the source has none, so idempotence still holds."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:32]


class Pipeline:
    """Per-process tagging resources (the analysers' model sessions, the fetcher, the decoder)
    and the flow that uses them."""

    def __init__(
        self,
        settings: Settings,
        analyzers: Sequence[Analyzer],
        fetcher: Fetcher,
    ) -> None:
        if not analyzers:
            raise ConfigError("no analyser enabled; set TAGGER_ANALYZERS")
        self.settings = settings
        self.analyzers = list(analyzers)
        self.versions: dict[str, str] = {a.name: a.version for a in self.analyzers}
        self.model_version = combined_version(self.versions)
        self.fetcher = fetcher
        # One decoder per process: its byte budget is shared by every I/O thread.
        self.decoder = ImageDecoder(settings.image)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.fetch.io_threads, thread_name_prefix="tagger-io"
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, allow_local_paths: bool | None = None
    ) -> Pipeline:
        return cls(
            settings,
            create_analyzers(settings),
            Fetcher(settings, allow_local_paths=allow_local_paths),
        )

    def analyzer(self, name: str) -> Analyzer | None:
        return next((a for a in self.analyzers if a.name == name), None)

    def warm_up(self) -> None:
        """onnxruntime allocates and tunes on its first runs, which should happen at process
        start rather than inside a user's first task."""
        for analyzer in self.analyzers:
            analyzer.warm_up()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the flow -------------------------------------------------------------------------

    def tag_batch(
        self,
        refs: Sequence[PhotoRef | str],
        known: Mapping[str, PhotoState] | None = None,
        previous: Mapping[str, TagResult] | None = None,
    ) -> list[TagResult]:
        """Tag one batch; results come back in the order of ``refs``."""
        loads = self._submit_loads(refs, known or {}, previous or {}, thumbnails=False)
        return [outcome.result for outcome in self._infer(loads)]

    def tag_stream(
        self,
        refs: Iterable[PhotoRef | str],
        known: Mapping[str, PhotoState] | None = None,
        batch_size: int | None = None,
        previous: Mapping[str, TagResult] | None = None,
    ) -> Iterator[list[TagResult]]:
        """Tag many photos batch by batch, downloading and decoding the next batch while the
        current one is analysed, so the CPU never waits on the network.

        ``known`` is what the store holds (a photo tagged from the same content by the same
        analysers is skipped); ``previous`` the stored results of photos whose analysers are
        partly outdated, of which only the outdated analysers re-run.
        """
        for batch in self.outcomes(refs, known, batch_size, previous):
            yield [outcome.result for outcome in batch]

    def outcomes(
        self,
        refs: Iterable[PhotoRef | str],
        known: Mapping[str, PhotoState] | None = None,
        batch_size: int | None = None,
        previous: Mapping[str, TagResult] | None = None,
        *,
        thumbnails: bool = False,
    ) -> Iterator[list[Outcome]]:
        """:meth:`tag_stream` with, when ``thumbnails``, each photo tagged from its pixels
        carrying a thumbnail (``settings.thumbnails``) made from the same decode."""
        size = batch_size or self.settings.batch_size
        pending: list[Future[Loaded]] | None = None
        for chunk in _chunks(refs, size):
            loading = self._submit_loads(chunk, known or {}, previous or {}, thumbnails)
            if pending is not None:
                yield self._infer(pending)
            pending = loading
        if pending is not None:
            yield self._infer(pending)

    def _submit_loads(
        self,
        refs: Sequence[PhotoRef | str],
        known: Mapping[str, PhotoState],
        previous: Mapping[str, TagResult],
        thumbnails: bool,
    ) -> list[Future[Loaded]]:
        return [self._pool.submit(self._load, ref, known, previous, thumbnails) for ref in refs]

    def _load(
        self,
        raw: PhotoRef | str,
        known: Mapping[str, PhotoState],
        previous: Mapping[str, TagResult],
        thumbnails: bool = False,
    ) -> Loaded:
        ref_text = _shown(raw)
        etag: str | None = None
        try:
            ref = PhotoRef.parse(raw)
            ref_text = ref.identity
            state = known.get(ref_text)
            prior = previous.get(ref_text)
            if state is not None and ref.kind == "s3":
                etag = self.fetcher.head(ref)
                if state.is_tagged_by(etag, self.versions):
                    return Loaded(ref_text, result=self._skipped(ref_text, state))
                if etag is not None and (
                    without := self._without_pixels(prior, etag, self._reusable(prior, etag))
                ):
                    return without
            fetched = self.fetcher.fetch(ref)
            etag = fetched.etag or content_tag(fetched.data)
            if state is not None and state.is_tagged_by(etag, self.versions):
                return Loaded(ref_text, result=self._skipped(ref_text, state))
            reused = self._reusable(prior, etag)
            if without := self._without_pixels(prior, etag, reused):
                return without
            needed = [a for a in self.analyzers if a.name not in reused]
            side = max(a.min_side for a in needed)
            if thumbnails:  # large enough that the thumbnail is not enlarged from a draft
                side = max(side, decode_side(fetched.data, self.settings.thumbnails.side))
            (prepared, thumbnail), decoded = self.decoder.decode_into(
                fetched.data, side, partial(self._prepare, needed, ref_text, thumbnails)
            )
            size = (decoded.width, decoded.height)
            return Loaded(ref_text, prepared, reused, etag, *size, thumbnail=thumbnail)
        except (TaggerError, ValueError) as exc:  # ValueError: an invalid reference
            # the ETag of a photo that failed to decode is kept, so a replaced photo is retried
            return Loaded(ref_text, result=self._failed(ref_text, exc, etag))
        except Exception as exc:  # a bug must not lose the rest of the batch
            log.exception("unexpected error loading a photo", extra={"ref": ref_text})
            return Loaded(ref_text, result=self._failed(ref_text, exc, etag))

    def _prepare(
        self, needed: Sequence[Analyzer], ref: str, thumbnail: bool, image: Image.Image
    ) -> tuple[dict[str, Any], bytes | None]:
        """Every needed analyser's input and the thumbnail, from the one decoded picture
        (upright, already reduced) while it holds its share of the decode budget."""
        prepared = {a.name: a.prepare(image) for a in needed}
        return prepared, (self._thumbnail(image, ref) if thumbnail else None)

    def _thumbnail(self, image: Image.Image, ref: str) -> bytes | None:
        """A thumbnail is an extra: a photo that tags but will not encode is still tagged."""
        wanted = self.settings.thumbnails
        try:
            return make_thumbnail(image, wanted.side, wanted.quality)
        except Exception as exc:
            log.warning("thumbnail failed", extra={"ref": ref, "error": type(exc).__name__})
            return None

    def _without_pixels(
        self, prior: TagResult | None, etag: str, reused: Mapping[str, Findings]
    ) -> Loaded | None:
        """The photo ready for analysis from its stored result alone, when every analyser that
        must re-run reads no pixels (``min_side`` 0: a label set's head on the stored
        embedding). An S3 photo is then not even fetched (its ETag came from a HEAD), a file
        not decoded; a new label set reaches a million stored photos at store speed.
        ``reused`` is what :meth:`_reusable` keeps of ``prior`` for this ETag."""
        needed = [a for a in self.analyzers if a.name not in reused]
        if prior is None or not reused or any(a.min_side > 0 for a in needed):
            return None
        prepared: dict[str, Any] = {a.name: None for a in needed}
        return Loaded(prior.ref, prepared, dict(reused), etag, prior.width, prior.height)

    def _reusable(self, prior: TagResult | None, etag: str) -> dict[str, Findings]:
        """The findings of ``prior`` that stay valid: same content, analyser at the enabled
        version, and nothing it reads being re-run."""
        if prior is None or prior.status is not Status.TAGGED or prior.etag != etag:
            return {}
        rerun = rerun_closure(self.analyzers, prior.outdated(self.versions))
        kept: dict[str, Findings] = {}
        for name in self.versions:
            found = None if name in rerun else prior.findings_of(name)
            if found is not None:
                kept[name] = found
        if len(kept) == len(self.versions):  # same versions under another combined one
            return {}
        return kept

    def _infer(self, futures: Sequence[Future[Loaded]]) -> list[Outcome]:
        loaded = [future.result() for future in futures]
        ready = [item for item in loaded if item.result is None]
        found: list[dict[str, Findings]] = [dict(item.reused) for item in ready]
        started = time.perf_counter()
        for analyzer in self.analyzers:
            indices = [
                i
                for i, item in enumerate(ready)
                if item.result is None and analyzer.name in item.prepared
            ]
            if not indices:
                continue
            inputs = [ready[i].prepared.pop(analyzer.name) for i in indices]
            try:
                with metrics.time_analyzer(analyzer.name):
                    outputs = analyzer.analyse(inputs, [found[i] for i in indices])
            except Exception as exc:
                log.exception(
                    "analyser failed", extra={"analyzer": analyzer.name, "photos": len(indices)}
                )
                for i in indices:
                    ready[i].result = self._failed(ready[i].ref, exc)
                continue
            for i, output in zip(indices, outputs, strict=True):
                found[i][analyzer.name] = output
        if ready:
            metrics.observe_inference_batch(time.perf_counter() - started)
        for item, findings in zip(ready, found, strict=True):
            if item.result is None:
                item.result = self._tagged(item, findings)
        return [
            Outcome(item.result, item.thumbnail if item.result.status is Status.TAGGED else None)
            for item in loaded
            if item.result is not None
        ]

    # -- results --------------------------------------------------------------------------

    def _tagged(self, item: Loaded, findings: Mapping[str, Findings]) -> TagResult:
        ordered = {a.name: findings[a.name] for a in self.analyzers if a.name in findings}
        return TagResult.merged(
            ordered,
            self.versions,
            ref=item.ref,
            status=Status.TAGGED,
            etag=item.etag,
            width=item.width,
            height=item.height,
        )

    def _skipped(self, ref: str, previous: PhotoState) -> TagResult:
        return TagResult(
            ref=ref,
            status=Status.SKIPPED,
            reason="already tagged with this content and these analysers",
            model_version=previous.model_version,
            etag=previous.etag,
        )

    def _failed(self, ref: str, exc: Exception, etag: str | None = None) -> TagResult:
        # An unexpected exception is a bug, which a retry does not fix: it is recorded as
        # permanent, and `tagger backfill --retry-failed` re-runs it once the bug is fixed.
        if isinstance(exc, TaggerError):
            reason, code, transient = exc.reason, exc.code, not exc.permanent
        elif isinstance(exc, ValueError):
            reason, code, transient = _first_line(exc), ErrorCode.INVALID_REF, False
        else:
            reason, code, transient = (
                f"internal error: {type(exc).__name__}",
                ErrorCode.INTERNAL,
                False,
            )
        return TagResult(
            ref=ref,
            status=Status.FAILED,
            reason=reason,
            error=code,
            transient=transient,
            model_version=self.model_version,
            etag=etag,
        )


def _shown(raw: PhotoRef | str) -> str:
    """How a reference that may not even parse is named in a result: never with a query."""
    text = str(raw)
    return redact_url(text) if "://" in text and not text.lower().startswith("s3://") else text


def _first_line(exc: Exception) -> str:
    """The one-line reason of a refused reference: pydantic's own message for its first
    error, not its multi-line rendering (which names the model and the input)."""
    if isinstance(exc, ValidationError) and exc.errors():
        return str(exc.errors()[0]["msg"])[:300]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


# -- the flow that stores ------------------------------------------------------------------


class StoredBatch(BaseModel):
    """One inference batch after it was saved: its results in input order (skipped photos
    as what the store already holds when ``show_stored``), and the full references of the
    photos whose transient failure the caller should retry (not saved, still 'queued')."""

    results: list[TagResult] = Field(default_factory=list)
    retry: list[str] = Field(default_factory=list)


def call_store(action: Callable[[], _T], wait: float) -> _T:
    """Run one store call, waiting up to ``wait`` seconds for an unreachable store to return
    (a database restart, a failover) before giving up with :class:`StoreUnavailable`."""
    retrying = Retrying(
        retry=retry_if_exception_type(StoreUnavailable),
        stop=stop_after_delay(wait),
        wait=wait_exponential(multiplier=0.5, max=5.0) + wait_random(0, 0.5),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "store unavailable; waiting",
            extra={"attempt": state.attempt_number, "waited": state.seconds_since_start},
        ),
    )
    return retrying(action)


def tag_and_store(
    pipeline: Pipeline,
    store: TagStore,
    refs: Sequence[str],
    *,
    job_id: str | None = None,
    force: bool = False,
    retry_transient: bool = False,
    writeback: S3WriteBack | None = None,
    thumbnails: ThumbnailStore | None = None,
    show_stored: bool = False,
    batch_size: int | None = None,
    store_wait: float | None = None,
) -> Iterator[StoredBatch]:
    """Tag ``refs`` and save every result, one inference batch at a time.

    Skips what the store already holds for the same content and model (unless ``force``),
    saves tagged and failed photos, writes them back to S3 when configured and marks the
    job's items. With ``thumbnails``, the thumbnail of every photo tagged from its pixels is
    written there first, so a saved result has its thumbnail (one re-tagged from its stored
    embedding keeps the one it has); a thumbnail that cannot be written is logged, and its
    photo saved all the same. With ``retry_transient``, a transient failure (S3 or a host
    down) is not saved but handed back in :attr:`StoredBatch.retry`, so the caller can try
    again later; without it, it is saved as ``failed`` with ``transient=true``. A store that
    stays unreachable for ``store_wait`` seconds raises :class:`StoreUnavailable` with
    nothing of the unsaved batch acknowledged anywhere.
    """
    wait = pipeline.settings.worker.store_wait if store_wait is None else store_wait
    identities = [_identity(ref) for ref in refs]
    known = {} if force else call_store(partial(store.known, identities), wait)
    # Photos tagged before by analysers of which some are now outdated: their stored results
    # are read so that only the outdated analysers run (same content only; checked per photo).
    outdated = [
        ref
        for ref, state in known.items()
        if state.status is Status.TAGGED and not state.is_current(pipeline.versions)
    ]
    previous = call_store(partial(store.get_many, outdated), wait) if outdated else {}
    pending = iter(refs)
    wanted = thumbnails is not None
    for outcomes in pipeline.outcomes(refs, known, batch_size, previous, thumbnails=wanted):
        batch = [outcome.result for outcome in outcomes]
        sent = [next(pending) for _ in batch]
        retry = [ref for ref, r in zip(sent, batch, strict=True) if retry_transient and r.transient]
        keep = [r for r in batch if not (retry_transient and r.transient)]
        to_save = [r for r in keep if r.status != Status.SKIPPED]
        if thumbnails is not None:
            made = {o.result.ref: o.thumbnail for o in outcomes if o.thumbnail is not None}
            write_thumbnails(thumbnails, made)
        call_store(partial(store.save, to_save), wait)
        if writeback is not None:
            writeback.write(keep)
        if job_id is not None:
            states = {r.ref: _JOB_STATE[r.status] for r in keep}
            call_store(partial(store.mark_job_items, job_id, states), wait)
        if show_stored:
            skipped = [r.ref for r in keep if r.status == Status.SKIPPED]
            stored = call_store(partial(store.get_many, skipped), wait) if skipped else {}
            keep = [stored.get(r.ref, r) if r.status == Status.SKIPPED else r for r in keep]
        yield StoredBatch(results=keep, retry=retry)


def write_thumbnails(thumbnails: ThumbnailStore, items: Mapping[str, bytes]) -> int:
    """Write thumbnails by photo identity; returns how many failed. Failures are logged, not
    raised, as the write-back's are: a thumbnail is an extra, and an outage of its store must
    not fail or lose the results it illustrates."""
    if not items:
        return 0
    try:
        thumbnails.put_many(items)
    except ThumbnailStoreError as exc:
        for ref, error in exc.failed.items():
            log.warning("thumbnail write failed", extra={"ref": ref, "error": error})
        return len(exc.failed)
    except Exception as exc:  # another store's own failure: the photos are safe all the same
        log.warning(
            "thumbnail write failed", extra={"photos": len(items), "error": type(exc).__name__}
        )
        return len(items)
    return 0


_JOB_STATE: Mapping[Status, str] = MappingProxyType(
    {Status.TAGGED: "done", Status.FAILED: "failed", Status.SKIPPED: "skipped"}
)


def _identity(ref: str) -> str:
    try:
        return PhotoRef.parse(ref).identity
    except ValueError:
        return _shown(ref)


def _chunks(items: Iterable[PhotoRef | str], size: int) -> Iterator[list[PhotoRef | str]]:
    chunk: list[PhotoRef | str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
