"""The Celery app the workers run (``celery -A workers.app worker`` or ``tagger worker``).

Celery discovers an app through a module attribute, so this module holds one; it is built
from :class:`~tagger.config.Settings` with the same configuration the client sends with.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from tagger import metrics
from tagger.config import Settings
from tagger.logs import configure_json_logging
from tagger.queueing import make_celery
from workers.backfill_task import register_backfill_task
from workers.beat import beat_schedule
from workers.broker import TRANSPORT as REDIS_TRANSPORT
from workers.exposition import start_exposition
from workers.resources import ResourceHolder
from workers.tasks import register_tasks
from workers.visibility import VisibilityRenewal


def create_app(settings: Settings | None = None) -> tuple[Celery, ResourceHolder]:
    settings = settings or Settings()
    app = make_celery(settings, name="tagger-worker")
    app.conf.beat_schedule = beat_schedule(settings)
    if settings.worker.concurrency:
        app.conf.worker_concurrency = settings.worker.concurrency
    # The last guard of the memory budget: a child that ends a task above it is replaced.
    app.conf.worker_max_memory_per_child = settings.worker.max_memory_mb * 1024  # KiB
    app.steps["consumer"].add(VisibilityRenewal)
    if settings.worker.broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport = REDIS_TRANSPORT  # survives a Redis restart, see its docs
    holder = ResourceHolder(settings)
    register_tasks(app, holder)
    register_backfill_task(app, settings)
    return app, holder


app, resources = create_app()


@setup_logging.connect  # type: ignore[untyped-decorator]
def _json_logs(loglevel: int | str | None = None, **_: Any) -> None:
    """Connecting this signal replaces Celery's own log setup with one JSON line per event."""
    configure_json_logging(loglevel or "INFO")


@worker_init.connect  # type: ignore[untyped-decorator]
def _serve_metrics(**_: Any) -> None:
    """The main process serves /metrics for all its children (workers/exposition.py)."""
    start_exposition(app, resources.settings)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _load_model(**_: Any) -> None:
    """Each prefork child loads the model before its first task, not during it, and
    publishes the analyser versions it runs (``tagger_analyzer_info``)."""
    metrics.record_analyzers(resources.get().pipeline.versions)


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _release(pid: int | None = None, **_: Any) -> None:
    resources.close()
    if pid is not None:
        metrics.process_exited(pid)
