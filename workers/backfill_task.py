"""The backfill as a Celery task, so beat can start it every night.

It runs inside a worker and waits whenever the tagging queue is over its bound, so it needs a
worker process of its own: run workers with more than one process, or give the task its own
queue (``TAGGER_BACKFILL__QUEUE``) and a small worker consuming it. A redelivered or doubled
task finds the prefix locked and returns at once.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from tagger.backfill import BackfillOptions, LockHeld, Target, hold_lock, run_backfill
from tagger.client import TaggerClient
from tagger.config import Settings
from tagger.queueing import BACKFILL_TASK

log = logging.getLogger(__name__)


def register_backfill_task(app: Celery, settings: Settings) -> None:
    @app.task(  # type: ignore[untyped-decorator]
        name=BACKFILL_TASK,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        shared=False,
    )
    def backfill(
        target: str, retag_outdated: bool = False, retry_failed: bool = False
    ) -> dict[str, Any]:
        parsed = Target.parse(target)
        options = BackfillOptions(retag_outdated=retag_outdated, retry_failed=retry_failed)
        try:
            with TaggerClient(settings) as client, hold_lock(settings, parsed) as lease:
                summary = run_backfill(settings, parsed, client.store, client, options, lease=lease)
        except LockHeld as exc:
            log.info("backfill not started", extra={"target": parsed.uri, "reason": str(exc)})
            return {"target": parsed.uri, "locked": True}
        return summary.model_dump(mode="json")
