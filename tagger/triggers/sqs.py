"""Long-polling an SQS queue of bucket notifications and submitting the photos they name.

Delivery is at least once end to end: a message is deleted only after the refs it carries were
submitted (the job and its tasks are in the broker), so a crash between receive and delete
redelivers it, and the workers' idempotence (same ETag and model version = no work) makes the
repeat cheap. Within one poll, records are deduplicated before anything is submitted.

Malformed messages are logged and *deleted*: a body that is not JSON, or JSON that is not an S3
notification, will be just as wrong on every redelivery, and leaving it to the queue's
dead-letter policy would only hand it back to us maxReceiveCount times first. A message whose
refs could not be *submitted* (broker or store down) is the opposite case: it is kept, so SQS
redelivers it after the visibility timeout, and a queue with a redrive policy parks it in the
dead-letter queue only if the outage outlasts maxReceiveCount deliveries. An SNS subscription
confirmation that SNS did not accept is kept for redelivery too.

While a poll's messages are being handled, a keeper thread extends their visibility every half
timeout (``change_message_visibility_batch``), so a slow broker never lets SQS hand the same
messages to a second listener mid-submit. Deletes go out in batches of ten.

Shutdown: setting the stop event (SIGTERM in the CLI) lets the current poll finish, submit and
delete included, then :meth:`SqsListener.run` returns; the longest wait is one long poll
(``triggers.sqs_wait_seconds``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from tagger.config import Settings
from tagger.triggers.parser import EventBatch, MalformedEvent, Submitter, parse_notification
from tagger.triggers.sns import ConfirmationFailed, SubscriptionConfirmer

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        MessageTypeDef,
    )

log = logging.getLogger(__name__)

_SQS_BATCH = 10  # the most entries SQS accepts in one batch call
_MAX_BACKOFF = 30.0


class PollStats(BaseModel):
    """What one poll (or, summed, a whole run) did; logged, and handy in tests."""

    received: int = 0
    submitted: int = 0
    skipped: int = 0
    duplicates: int = 0
    malformed: int = 0
    confirmed: int = 0
    deleted: int = 0
    kept: int = 0
    job_id: str | None = None
    failed: bool = False

    def add(self, other: PollStats) -> None:
        for name in (
            "received",
            "submitted",
            "skipped",
            "duplicates",
            "malformed",
            "confirmed",
            "deleted",
            "kept",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def sqs_client(settings: Settings) -> SQSClient:
    """An SQS client whose read timeout outlasts the long poll. S3 notifies queues in the
    bucket's own region only, so the S3 region is the queue's region too."""
    wait = settings.triggers.sqs_wait_seconds
    return boto3.client(
        "sqs",
        region_name=settings.s3.region,
        endpoint_url=settings.triggers.sqs_endpoint_url,
        config=Config(
            connect_timeout=10,
            read_timeout=max(60, wait + 10),
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


class SqsListener:
    """Receives notifications from one queue and submits their photos, one job per poll."""

    def __init__(
        self,
        queue_url: str,
        settings: Settings,
        submitter: Submitter,
        *,
        sqs: SQSClient | None = None,
        confirmer: SubscriptionConfirmer | None = None,
    ) -> None:
        self.queue_url = queue_url
        self._triggers = settings.triggers
        self._submitter = submitter
        self._sqs = sqs or sqs_client(settings)
        self._confirmer = confirmer or SubscriptionConfirmer(settings)

    def check(self) -> None:
        """Fail fast (ClientError/BotoCoreError) when the queue does not exist or is not ours."""
        self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])

    def run(self, stop: threading.Event) -> PollStats:
        """Poll until ``stop`` is set; returns the totals. Transient SQS errors and submit
        failures back off (interruptibly) and go on."""
        totals = PollStats()
        backoff = 1.0
        while not stop.is_set():
            try:
                stats = self.poll_once()
            except (ClientError, BotoCoreError) as exc:
                log.error("sqs receive failed queue=%s error=%s", self.queue_url, exc)
                stats = PollStats(failed=True)
            totals.add(stats)
            if stats.failed:
                stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            else:
                backoff = 1.0
        per_poll = {"job_id", "failed"}
        fields = totals.model_dump(exclude=per_poll)
        log.info("sqs listener stopped %s", _fields(totals, per_poll), extra=fields)
        return totals

    def poll_once(self) -> PollStats:
        """One receive, then submit and delete what it brought."""
        reply = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self._triggers.sqs_max_messages,
            WaitTimeSeconds=self._triggers.sqs_wait_seconds,
            VisibilityTimeout=self._triggers.sqs_visibility_timeout,
        )
        messages = reply.get("Messages", [])
        stats = PollStats(received=len(messages))
        if not messages:
            return stats
        with _VisibilityKeeper(
            self._sqs, self.queue_url, messages, self._triggers.sqs_visibility_timeout
        ):
            done = self._handle(messages, stats)
        stats.deleted = self._delete(done)
        if stats.submitted or stats.malformed or stats.kept:
            log.info("sqs poll %s", _fields(stats), extra=stats.model_dump())
        return stats

    def _handle(self, messages: Sequence[MessageTypeDef], stats: PollStats) -> list[MessageTypeDef]:
        """Messages that may be deleted now; the rest are left for redelivery."""
        done: list[MessageTypeDef] = []
        carrying: list[tuple[MessageTypeDef, EventBatch]] = []
        for message in messages:
            try:
                batch = parse_notification(message.get("Body", ""), self._triggers)
            except MalformedEvent as exc:
                log.warning(
                    "malformed message deleted id=%s reason=%s", message.get("MessageId"), exc
                )
                stats.malformed += 1
                done.append(message)
                continue
            stats.skipped += len(batch.skipped)
            if batch.confirmations and not self._confirm(batch):
                stats.kept += 1
                continue
            stats.confirmed += len(batch.confirmations)
            if batch.objects:
                carrying.append((message, batch))
            else:
                done.append(message)
        merged = EventBatch.merge(batch for _, batch in carrying)
        stats.duplicates = merged.duplicates
        refs = merged.refs()
        if not refs:
            return done
        try:
            job = self._submitter.submit(refs)
        except Exception as exc:  # whatever broke, the messages must come back
            log.error(
                "submit failed; messages left for redelivery count=%d error=%s",
                len(carrying),
                exc,
            )
            stats.kept += len(carrying)
            stats.failed = True
            return done
        stats.submitted = len(refs)
        stats.job_id = job.id
        return done + [message for message, _ in carrying]

    def _confirm(self, batch: EventBatch) -> bool:
        try:
            for request in batch.confirmations:
                self._confirmer.confirm(request)
        except ConfirmationFailed as exc:
            log.error("sns confirmation failed; message kept error=%s", exc)
            return False
        return True

    def _delete(self, messages: Sequence[MessageTypeDef]) -> int:
        deleted = 0
        for start in range(0, len(messages), _SQS_BATCH):
            chunk = messages[start : start + _SQS_BATCH]
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(chunk)
            ]
            try:
                reply = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                # redelivered later; the workers' idempotence absorbs the repeat
                log.error("sqs delete failed count=%d error=%s", len(chunk), exc)
                continue
            for failure in reply.get("Failed", []):
                log.error(
                    "sqs delete refused id=%s code=%s", failure.get("Id"), failure.get("Code")
                )
            deleted += len(reply.get("Successful", []))
        return deleted


class _VisibilityKeeper:
    """Extends the visibility of in-flight messages every half timeout until closed."""

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        messages: Sequence[MessageTypeDef],
        timeout: int,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._handles = [message["ReceiptHandle"] for message in messages]
        self._timeout = timeout
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-visibility", daemon=True)

    def __enter__(self) -> _VisibilityKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._closed.wait(self._timeout / 2):
            self._extend()

    def _extend(self) -> None:
        for start in range(0, len(self._handles), _SQS_BATCH):
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": self._timeout}
                for index, handle in enumerate(self._handles[start : start + _SQS_BATCH])
            ]
            try:
                reply = self._sqs.change_message_visibility_batch(
                    QueueUrl=self._queue_url, Entries=entries
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("sqs visibility extension failed error=%s", exc)
                continue
            log.info(
                "sqs visibility extended count=%d seconds=%d",
                len(reply.get("Successful", [])),
                self._timeout,
            )


def _fields(stats: PollStats, exclude: set[str] | None = None) -> str:
    return " ".join(f"{name}={value}" for name, value in stats.model_dump(exclude=exclude).items())
