"""The tagging task: one batch of references through the pipeline into the store.

Idempotent by construction: the store is asked what it already holds (ref, ETag, model
version) before any work, and results are saved per inference batch, so a redelivered task
(a worker killed mid-batch, ``acks_late``) redoes only what was not yet saved.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

from celery import Celery, Task
from celery.utils.time import get_exponential_backoff_interval
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import InterfaceError, OperationalError

from tagger.queueing import TAG_TASK, TagBatchRequest
from tagger.schemas import Status, TagResult
from workers.resources import ResourceHolder

log = logging.getLogger(__name__)

_JOB_STATE = MappingProxyType(
    {Status.TAGGED: "done", Status.FAILED: "failed", Status.SKIPPED: "skipped"}
)


def register_tasks(app: Celery, holder: ResourceHolder) -> None:
    settings = holder.settings.worker

    @app.task(  # type: ignore[untyped-decorator]
        name=TAG_TASK,
        shared=False,  # bound to this app's resources, not to every Celery app
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=settings.retry_max,
        ignore_result=True,
        # The store or broker briefly unreachable: the whole batch is retried later rather
        # than acked as failed, so no photo is lost to a database restart.
        autoretry_for=(OperationalError, InterfaceError, RedisConnectionError),
        retry_backoff=True,
        retry_backoff_max=int(settings.retry_backoff_max),
        retry_jitter=True,
    )
    def tag_batch(self: Task, job_id: str, refs: list[str], force: bool = False) -> dict[str, int]:
        request = TagBatchRequest(job_id=job_id, refs=refs, force=force)
        resources = holder.get()
        store, pipeline = resources.store, resources.pipeline
        known = {} if request.force else store.known(request.refs)
        final = self.request.retries >= self.max_retries
        retry: list[str] = []
        counts = {"tagged": 0, "failed": 0, "skipped": 0, "retrying": 0}
        for batch in pipeline.tag_stream(request.refs, known, resources.settings.batch_size):
            keep = [r for r in batch if not (r.transient and not final)]
            retry.extend(r.ref for r in batch if r.transient and not final)
            store.save([r for r in keep if r.status != Status.SKIPPED])
            if resources.writeback is not None:
                resources.writeback.write(keep)
            store.mark_job_items(request.job_id, {r.ref: _JOB_STATE[r.status] for r in keep})
            _count(counts, keep)
        counts["retrying"] = len(retry)
        log.info("batch done", extra={"job_id": job_id, **counts})
        if retry:
            countdown = get_exponential_backoff_interval(
                factor=1,
                retries=self.request.retries,
                maximum=int(settings.retry_backoff_max),
                full_jitter=True,
            )
            raise self.retry(
                kwargs=TagBatchRequest(job_id=job_id, refs=retry, force=force).model_dump(),
                countdown=max(1, countdown),
            )
        return counts


def _count(counts: dict[str, Any], results: list[TagResult]) -> None:
    for result in results:
        counts[result.status.value] += 1
