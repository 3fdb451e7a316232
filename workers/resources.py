"""What each worker process owns: one pipeline (one onnxruntime session) and one store.

Created at ``worker_process_init`` so a prefork child pays the model load once, before its
first task, and never per photo. Held by a small holder object attached to the Celery app
rather than a module global, so tests and the eager path can build their own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from tagger.config import Settings
from tagger.pipeline import Pipeline
from tagger.store import SqlTagStore
from tagger.store.writeback import S3WriteBack
from tagger.thumbnails import ThumbnailStore, thumbnail_store

log = logging.getLogger(__name__)


@dataclass
class WorkerResources:
    settings: Settings
    pipeline: Pipeline
    store: SqlTagStore
    writeback: S3WriteBack | None = None
    thumbnails: ThumbnailStore | None = None
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def create(cls, settings: Settings) -> WorkerResources:
        settings = threads_per_process(settings)
        pipeline = Pipeline.from_settings(settings)
        pipeline.warm_up()
        store = SqlTagStore.from_settings(settings)
        writeback = S3WriteBack.from_settings(settings, pipeline.fetcher)
        # S3 thumbnails share the fetcher's one client (and its connection pool).
        thumbnails = thumbnail_store(settings, make_client=lambda: pipeline.fetcher.s3_client)
        log.info(
            "worker process ready",
            extra={
                "model_version": pipeline.model_version,
                "threads": settings.model.intra_op_threads,
            },
        )
        return cls(settings, pipeline, store, writeback, thumbnails)

    def close(self) -> None:
        self.pipeline.close()
        self.store.close()


def threads_per_process(settings: Settings) -> Settings:
    """Split the cores between the worker's processes unless Settings fix the thread count,
    so N processes do not each start a thread per core and thrash."""
    if settings.model.intra_op_threads:
        return settings
    cores = os.cpu_count() or 1
    processes = settings.worker.concurrency or cores
    model = settings.model.model_copy(update={"intra_op_threads": max(1, cores // processes)})
    return settings.model_copy(update={"model": model})


class ResourceHolder:
    """Lazily creates the process's resources; re-creates them after a fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._resources: WorkerResources | None = None

    def get(self) -> WorkerResources:
        if self._resources is None or self._resources.pid != os.getpid():
            self._resources = WorkerResources.create(self.settings)
        return self._resources

    def close(self) -> None:
        if self._resources is not None and self._resources.pid == os.getpid():
            self._resources.close()
        self._resources = None
