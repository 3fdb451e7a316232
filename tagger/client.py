"""The Python client: submit photo references, follow jobs, read tags.

It talks to the broker (sending tasks by name) and to the result store, never to the model:
an application that enqueues photos does not need onnxruntime, TensorFlow or the worker code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence

from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tagger import errors
from tagger.config import Settings
from tagger.queueing import TAG_TASK, TagBatchRequest, make_celery, queue_depth
from tagger.schemas import JobCounts, PhotoRef, TagResult
from tagger.search import Recommendation, Searcher, TextSearch
from tagger.sources import redact_url
from tagger.store import SearchFilters, SearchHit, SqlTagStore


class InvalidReference(errors.InvalidReference):
    """A submitted reference is malformed (bad syntax, a path that loops…); nothing of that
    submission was enqueued."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(f"invalid photo reference {_redacted(ref)!r}: {reason}")
        self.ref = _redacted(ref)


def _redacted(ref: str) -> str:
    return redact_url(ref) if "://" in ref and not ref.lower().startswith("s3://") else ref


class Job:
    """A submitted set of photos whose progress the workers record in the store."""

    def __init__(self, client: TaggerClient, job_id: str, total: int) -> None:
        self.client = client
        self.id = job_id
        self.total = total

    def __repr__(self) -> str:
        return f"Job({self.id!r}, total={self.total})"

    def status(self) -> JobCounts:
        return self.client.store.job_counts(self.id)

    def wait(
        self, timeout: float | None = None, *, progress: bool = False, poll: float = 0.5
    ) -> JobCounts:
        """Block until every photo is done, failed or skipped; TimeoutError names the counts."""
        deadline = None if timeout is None else time.monotonic() + timeout
        counts = self.status()
        bar = _job_progress() if progress else None
        with bar or _Null():
            task = bar.add_task(self.id[:8], total=counts.total) if bar else None
            while not counts.finished:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} not finished after {timeout}s: {counts}")
                time.sleep(poll)
                counts = self.status()
                if bar is not None and task is not None:
                    bar.update(task, completed=counts.done + counts.failed + counts.skipped)
        return counts


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _job_progress() -> Progress:
    return Progress(
        TextColumn("job {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )


class TaggerClient:
    """Entry point for applications; build one per process and reuse it."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.celery = make_celery(self.settings, name="tagger-client")
        self.store = SqlTagStore.from_settings(self.settings)
        self.searcher = Searcher(self.store)

    def close(self) -> None:
        self.store.close()
        self.celery.close()

    def __enter__(self) -> TaggerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def validate(refs: Iterable[str | PhotoRef]) -> list[PhotoRef]:
        """Every reference parsed before anything is sent, duplicates (same identity)
        dropped, order kept."""
        valid: dict[str, PhotoRef] = {}
        for raw in refs:
            try:
                ref = PhotoRef.parse(raw)
            except ValidationError as exc:
                reason = str(exc.errors()[0]["msg"]) if exc.errors() else "invalid"
                raise InvalidReference(str(raw), reason) from None
            valid.setdefault(ref.identity, ref)
        return list(valid.values())

    def submit(
        self, refs: Iterable[str | PhotoRef], *, force: bool = False, batch_size: int | None = None
    ) -> Job:
        """Enqueue photos in batches of the worker's batch size and return the job."""
        photos = self.validate(refs)
        job_id = uuid.uuid4().hex
        # The store knows photos by identity (no signature); the message carries the full URL.
        self.store.add_job(job_id, [ref.identity for ref in photos])
        uris = [ref.uri for ref in photos]
        size = batch_size or self.settings.worker.batch_size
        with self.celery.producer_or_acquire() as producer:
            for start in range(0, len(uris), size):
                request = TagBatchRequest(
                    job_id=job_id, refs=uris[start : start + size], force=force
                )
                self.celery.send_task(
                    TAG_TASK,
                    kwargs=request.model_dump(),
                    kwargsrepr=request.redacted_repr(),
                    queue=self.settings.worker.queue,
                    producer=producer,
                )
        return Job(self, job_id, len(uris))

    def job(self, job_id: str) -> Job:
        return Job(self, job_id, self.store.job_counts(job_id).total)

    def tags(self, ref: str | PhotoRef) -> TagResult | None:
        return self.store.get(PhotoRef.parse(ref).identity)

    def search(
        self,
        tags: Sequence[str] = (),
        limit: int = 50,
        *,
        text: str | None = None,
        filters: SearchFilters | None = None,
        safe: bool = False,
    ) -> list[SearchHit]:
        """Photos having every one of ``tags`` (exact tag names), or matching a free-text
        query (``text="a blue car by the beach"``), and ``filters``; ``safe`` leaves out photos
        whose safety score reaches the configured threshold (and photos not scored).

        With ``text``, words no tag matches raise nothing: use :meth:`search_text` to see them.
        """
        if text is not None:
            return self.search_text(text, limit, filters=filters, safe=safe).hits
        return self.store.search(tags, limit=limit, filters=self.safe_filters(filters, safe))

    def search_text(
        self,
        text: str,
        limit: int = 50,
        *,
        filters: SearchFilters | None = None,
        safe: bool = False,
    ) -> TextSearch:
        """A free-text query's hits with what its words were taken to mean and the words no
        tag matches (``unknown``)."""
        return self.searcher.text(text, limit=limit, filters=self.safe_filters(filters, safe))

    def similar(
        self,
        ref: str | PhotoRef,
        k: int = 20,
        *,
        filters: SearchFilters | None = None,
        safe: bool = False,
    ) -> list[SearchHit]:
        """Photos most like ``ref`` (tagged already), best first: same kind of thing, same
        kind of scene (see :mod:`tagger.similarity`)."""
        identity = PhotoRef.parse(ref).identity
        return self.searcher.similar(identity, k=k, filters=self.safe_filters(filters, safe))

    def recommend(
        self,
        liked: Sequence[str | PhotoRef],
        k: int = 20,
        *,
        exclude: Sequence[str | PhotoRef] = (),
        diversity: float = 0.3,
        filters: SearchFilters | None = None,
        safe: bool = False,
    ) -> Recommendation:
        """Photos for someone who liked ``liked``, leaving out ``exclude`` (already seen),
        diversified so one liked dog does not return twenty near-identical dogs."""
        return self.searcher.recommend(
            [PhotoRef.parse(ref).identity for ref in liked],
            k=k,
            exclude=[PhotoRef.parse(ref).identity for ref in exclude],
            diversity=diversity,
            filters=self.safe_filters(filters, safe),
        )

    def safe_filters(self, filters: SearchFilters | None, safe: bool) -> SearchFilters:
        """``filters`` with ``safe`` applied: photos at or above the safety threshold (and
        photos not scored) left out."""
        chosen = filters or SearchFilters()
        if safe:
            bound = self.settings.safety.safe_below
            if chosen.max_nsfw is None or chosen.max_nsfw > bound:
                chosen = chosen.model_copy(update={"max_nsfw": bound})
        return chosen

    def flagged(self, limit: int = 100, threshold: float | None = None) -> list[TagResult]:
        """Photos the safety analyser flagged (score at or above the threshold, by default the
        configured one), most likely first."""
        chosen = self.settings.safety.threshold if threshold is None else threshold
        return self.store.flagged(chosen, limit=limit)

    def failures(self, limit: int = 100) -> list[TagResult]:
        return self.store.failures(limit=limit)

    def queue_depth(self) -> int:
        """Tasks waiting in the broker; the backfill uses it for backpressure."""
        return queue_depth(self.celery, self.settings.worker.queue)
