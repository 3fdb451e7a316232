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
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        try:
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
