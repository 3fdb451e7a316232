"""The tagging task: one batch of references through :func:`tagger.pipeline.tag_and_store`.

What happens to a batch under faults, decided here and nowhere else:

* A photo fails *transiently* (S3 or its host down): the rest of the batch is saved, and the
  failed ones are sent again as a new task after an exponential backoff with full jitter
  (at most ``worker.retry_backoff_max``), for as long as ``worker.outage_patience`` since their
  first failure; the next attempt after that records them as ``failed`` with
  ``transient=true``, visible in ``tagger failures`` and retried by the next backfill.
  Retries are counted in time, not in attempts, so a 20-minute outage cannot exhaust them.
* The *store* is unreachable: the task waits for it (``worker.store_wait``) and then hands the
  whole message back to the queue (``Reject(requeue=True)``) — no retry budget, no ack, so a
  database outage of any length loses nothing; while the store is down nothing could be
  recorded anyway.
* The worker *dies* (SIGKILL, OOM): the unacked message is renewed by no one and comes back
  within ``visibility_timeout + unacked_restore_interval`` (see :mod:`workers.visibility`).

Every path is idempotent on (ref identity, ETag, model version), so a batch that runs twice
tags nothing twice.

Each exit is measured (:mod:`tagger.metrics`): the task's seconds by outcome, the photos by
status and error code once saved, the bytes the batch read, and the two kinds of retry.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from celery.utils.time import get_exponential_backoff_interval

from tagger import metrics
from tagger.errors import StoreUnavailable
from tagger.pipeline import tag_and_store
from tagger.queueing import TAG_TASK, TagBatchRequest
from tagger.schemas import TagResult
from workers.resources import ResourceHolder, WorkerResources

log = logging.getLogger(__name__)


def register_tasks(app: Celery, holder: ResourceHolder) -> None:
    settings = holder.settings.worker

    @app.task(  # type: ignore[untyped-decorator]
        name=TAG_TASK,
        shared=False,  # bound to this app's resources, not to every Celery app
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,  # bounded by outage_patience in time, not by a count
        ignore_result=True,
        time_limit=settings.task_time_limit,
    )
    def tag_batch(
        self: Task,
        job_id: str,
        refs: list[str],
        force: bool = False,
        first_failure_at: float | None = None,
    ) -> dict[str, int]:
        started = time.perf_counter()
        request = TagBatchRequest(
            job_id=job_id, refs=refs, force=force, first_failure_at=first_failure_at
        )
        resources = holder.get()
        now = time.time()
        final = (
            request.first_failure_at is not None
            and now - request.first_failure_at >= settings.outage_patience
        )
        counts = {"tagged": 0, "failed": 0, "skipped": 0, "retrying": 0}
        retry: list[str] = []
        try:
            for stored in tag_and_store(
                resources.pipeline,
                resources.store,
                request.refs,
                job_id=request.job_id,
                force=request.force,
                retry_transient=not final,
                writeback=resources.writeback,
                thumbnails=resources.thumbnails,
                batch_size=resources.settings.batch_size,
            ):
                retry.extend(stored.retry)
                _count(counts, stored.results)
        except StoreUnavailable as exc:
            log.warning(
                "store unavailable; batch handed back to the queue",
                extra={"job_id": job_id, "photos": len(refs), "reason": exc.reason},
            )
            metrics.count_retry("store_unavailable")
            _finished(resources, "requeued", started)
            raise Reject(exc.reason, requeue=True) from None
        except Exception:
            _finished(resources, "error", started)
            raise
        counts["retrying"] = len(retry)
        log.info("batch done", extra={"job_id": job_id, **counts})
        if retry:
            again = TagBatchRequest(
                job_id=job_id,
                refs=retry,
                force=force,
                first_failure_at=request.first_failure_at or now,
            )
            countdown = get_exponential_backoff_interval(
                factor=1,
                retries=self.request.retries,
                maximum=int(settings.retry_backoff_max),
                full_jitter=True,
            )
            metrics.count_retry("transient")
            _finished(resources, "retry", started)
            raise self.retry(
                kwargs=again.model_dump(),
                countdown=max(1, countdown),
                kwargsrepr=again.redacted_repr(),
            )
        _finished(resources, "done", started)
        return counts


def _count(counts: dict[str, Any], results: list[TagResult]) -> None:
    metrics.record_results(results)
    for result in results:
        counts[result.status.value] += 1


def _finished(resources: WorkerResources, outcome: metrics.TaskOutcome, started: float) -> None:
    """What one task took and read, for /metrics, at whichever exit it leaves by."""
    metrics.observe_task(outcome, time.perf_counter() - started)
    metrics.count_fetched(resources.pipeline.fetcher.take_fetched_bytes())
