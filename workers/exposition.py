"""The worker's ``/metrics``: served by its main process, for itself and every child.

Prometheus scrapes one endpoint per worker. The prefork children do the tagging and count in
memory-mapped files of their own (prometheus_client's multiprocess mode, which ``tagger
worker`` sets up before Celery starts, see :mod:`tagger.metrics`); the main process, which only
routes messages, merges those files on each scrape and adds the queue depth, asked of the
broker at that moment. So a child busy with a batch never delays a scrape, and a child that
was replaced keeps its counts.
"""

from __future__ import annotations

import logging
from functools import partial

from celery import Celery

from tagger import metrics
from tagger.config import Settings
from tagger.queueing import queue_depth

log = logging.getLogger(__name__)


def start_exposition(app: Celery, settings: Settings) -> bool:
    """Serve ``/metrics`` on ``metrics.host:metrics.port``; False when off, when the port is
    taken, or when the worker was started without multiprocess mode (``celery -A workers.app
    worker`` run directly), whose children's counts the main process could not see."""
    config = settings.metrics
    if not config.port:
        return False
    if not metrics.multiprocess_active():
        log.warning(
            "metrics endpoint not started: start the worker with `tagger worker`, which sets "
            "up the metric files its processes share",
            extra={"port": config.port},
        )
        return False
    queues = [settings.worker.queue]
    if settings.backfill.queue and settings.backfill.queue not in queues:
        queues.append(settings.backfill.queue)
    depth = metrics.QueueDepthCollector({name: partial(queue_depth, app, name) for name in queues})
    return metrics.serve(config.port, config.host, metrics.exposition_registry(depth))
