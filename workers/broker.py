"""The Redis transport the workers consume with: kombu's, with one crash taken out.

When the connection to Redis drops, Celery closes the consumer's channel, and kombu's QoS tries
to put every message the worker holds unacked (running tasks, retries waiting for their
countdown) back in the queue — over the connection that just died. In kombu 5.7 that path
needs a fresh connection pool, whose parameters come from the already-closed connection, and
fails with ``AttributeError: 'NoneType' object has no attribute 'hostname'``, which Celery
treats as unrecoverable: every worker holding a message exits at a Redis restart.

The restore is not needed for safety: each of those messages is still in Redis's ``unacked``
hash, no longer renewed by this worker (see :mod:`workers.visibility`), so any worker's
periodic sweep returns it to the queue ``visibility_timeout`` seconds later. This transport
therefore lets a restore that cannot reach Redis give up quietly (logged) instead of crashing
the worker; when Redis *is* reachable (a warm shutdown), the restore runs as before.

That sweep is the service's reconciler: it is what re-enqueues a dead worker's batch. Its
re-enqueues, and those of a closing connection, are counted here, where they happen
(``tagger_requeues_total{reason}``); a task's own ``Reject(requeue=True)`` goes through the same
restore but is counted by the task, as a retry. A message acked by its worker between the
sweep's scan and its restore is counted without being restored: rare, and harmless in a count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

from tagger import metrics

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    _requeue_reason: metrics.RequeueReason | None = None

    @contextmanager
    def _counting(self, reason: metrics.RequeueReason) -> Iterator[None]:
        self._requeue_reason = reason
        try:
            yield
        finally:
            self._requeue_reason = None

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> Any:
        restored = super().restore_by_tag(tag, client, leftmost)  # type: ignore[no-untyped-call]
        if self._requeue_reason is not None:
            metrics.count_requeues(self._requeue_reason)
        return restored

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> Any:
        """The visibility sweep (any live worker's main process, every
        ``unacked_restore_interval`` s): messages not renewed for ``visibility_timeout``."""
        with self._counting("visibility_timeout"):
            return super().restore_visible(start, num, interval)  # type: ignore[no-untyped-call]

    def restore_unacked(self, client: Any = None) -> Any:
        try:
            with self._counting("shutdown"):
                return super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except (AttributeError, *kombu_redis.Transport.connection_errors) as exc:
            held = len(self._delivered)
            self._delivered.clear()
            log.warning(
                "broker unreachable; held messages left for the visibility sweep",
                extra={"messages": held, "error": type(exc).__name__},
            )
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
