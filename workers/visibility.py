"""Keeps the tasks a live worker holds invisible to other workers, so only a dead worker's
batches come back.

The Redis transport emulates acknowledgements: a delivered message waits in the ``unacked``
hash, indexed by delivery time in the ``unacked_index`` sorted set, and any worker's periodic
sweep (``restore_visible``) puts back every message older than ``visibility_timeout``. With the
timeout at an hour, a SIGKILLed worker's batch waits an hour; with a short timeout, a batch
that runs longer than it would be handed to a second worker while the first still works.

This bootstep resolves that: every third of the timeout, the worker's main process re-scores
the messages it holds (running, reserved and those waiting for a retry countdown) to *now*
(``ZADD … XX``: never resurrecting an acked one). A live worker's messages therefore never age
past the timeout; a dead worker's stop being renewed and are restored by a surviving worker's
next sweep, ``visibility_timeout + unacked_restore_interval`` seconds after the death. The
renewal runs in the main process, which only routes messages, so a busy child cannot delay it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import bootsteps
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


def held_delivery_tags(consumer: Any) -> list[str]:
    """Delivery tags of every message this consumer holds unacked.

    kombu's virtual QoS keeps them in ``_delivered``, the same dict it restores from when a
    channel closes; it is read, never changed.
    """
    task_consumer = getattr(consumer, "task_consumer", None)
    channel = getattr(task_consumer, "channel", None)
    qos = getattr(channel, "qos", None)
    delivered = getattr(qos, "_delivered", None) or {}
    return [str(tag) for tag in list(delivered)]


class VisibilityRenewal(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: renew the visibility of held messages on the consumer's timer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer_entry: Any = None
        self._client: redis.Redis | None = None
        self._index_key = "unacked_index"

    def start(self, parent: Any) -> None:
        conf = parent.app.conf
        url = str(conf.broker_url or "")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return  # brokers with real acknowledgements need no renewal
        options = conf.broker_transport_options or {}
        timeout = float(options.get("visibility_timeout", 3600))
        self._index_key = str(options.get("unacked_index_key", "unacked_index"))
        self._client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._timer_entry = parent.timer.call_repeatedly(
            max(1.0, timeout / 3), self.renew, (parent,), priority=1
        )

    def renew(self, parent: Any) -> None:
        tags = held_delivery_tags(parent)
        if not tags or self._client is None:
            return
        try:
            self._client.zadd(self._index_key, dict.fromkeys(tags, time.time()), xx=True)
        except RedisError as exc:  # the broker is down: its own reconnect logic takes over
            log.warning("visibility renewal failed", extra={"error": type(exc).__name__})

    def stop(self, parent: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        if self._client is not None:
            self._client.close()
            self._client = None
