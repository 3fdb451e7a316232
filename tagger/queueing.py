"""The contract between whoever enqueues photos and the workers that tag them.

The client, the listeners and the backfill send tasks *by name* with a Celery app built from
this configuration; the workers build theirs from the same function. Keeping both sides here
means the client never imports the worker code (and with it onnxruntime), yet the two can
never disagree on serializer, queue or task name.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from pydantic import BaseModel, Field

from tagger.config import Settings
from tagger.schemas import PhotoRef

TAG_TASK = "tagger.tag_batch"
BACKFILL_TASK = "tagger.backfill"


class TagBatchRequest(BaseModel):
    """The body of one tagging task: a batch of references, tagged together.

    The references are complete (a presigned URL keeps its signature, or it could not be
    fetched); :meth:`redacted_repr` is what Celery logs instead of them.
    """

    job_id: str
    refs: list[str] = Field(min_length=1)
    force: bool = False
    first_failure_at: float | None = Field(
        default=None, description="epoch seconds of the first transient failure of these refs"
    )

    def redacted_repr(self) -> str:
        """The body as Celery's log lines show it (``kwargsrepr``): refs without secrets."""
        shown = self.model_copy(update={"refs": [_redacted(ref) for ref in self.refs]})
        return repr(shown.model_dump())


def _redacted(ref: str) -> str:
    try:
        return PhotoRef.parse(ref).redacted
    except ValueError:
        return "<invalid reference>"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for both sides. JSON only: a pickle from the queue is code execution."""
    worker = settings.worker
    transport = {
        "visibility_timeout": worker.visibility_timeout,
        "unacked_restore_interval": worker.unacked_restore_interval,
        "unacked_restore_throttle": worker.unacked_restore_throttle,
    }
    return {
        "broker_url": worker.broker_url,
        "result_backend": worker.result_backend,
        "task_ignore_result": worker.result_backend is None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": worker.queue,
        "task_routes": {TAG_TASK: {"queue": worker.queue}, BACKFILL_TASK: {"queue": worker.queue}},
        "task_acks_late": True,
        # A message published while Redis restarts (a retry, a submit) waits for it.
        "task_publish_retry_policy": {
            "max_retries": 30,
            "interval_start": 0.5,
            "interval_step": 1.0,
            "interval_max": 5.0,
        },
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_celery(settings: Settings, name: str = "tagger") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


def queue_depth(app: Celery, queue: str) -> int:
    """Messages waiting in the broker queue (not those already delivered to a worker)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        try:
            declared = channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:  # an empty Redis queue does not exist as a key
            return 0
        return int(declared.message_count)
