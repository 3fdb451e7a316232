"""Long-polling an SQS queue of bucket notifications and submitting the photos they name.

Delivery is at least once end to end: a message is deleted only after the refs it carries were
submitted (the job and its tasks are in the broker), so a crash between receive and delete
redelivers it, and the workers' idempotence (same ETag and model version = no work) makes the
repeat cheap. Within one poll, records are deduplicated before anything is submitted.

Malformed messages are logged and *deleted*: a body that is not JSON, JSON that is not an S3
notification, or one beyond the parser's bounds (size, nesting), will be just as wrong on every
redelivery, and leaving it to the queue's dead-letter policy would only hand it back to us
maxReceiveCount times first. Each message is handled on its own, so one poison message never
costs the good ones received with it; an unexpected error on one (a bug, not a bad body) is
logged with its traceback and that message alone is kept for redelivery, where the queue's
redrive policy will park it if it keeps failing. Nothing one message holds ends the loop.

A message whose refs could not be *submitted* (broker or store down) is the opposite case: it
is kept, so SQS redelivers it after the visibility timeout, and a queue with a redrive policy
parks it in the dead-letter queue only if the outage outlasts maxReceiveCount deliveries. An
SNS subscription confirmation that SNS did not accept is kept for redelivery too.

While a poll's messages are being handled, a keeper thread extends their visibility every half
timeout (``change_message_visibility_batch``), so a slow broker never lets SQS hand the same
messages to a second listener mid-submit. Deletes go out in batches of ten.

Region: S3 notifies queues in the bucket's own region, and an AWS queue URL names that region
(``sqs.<region>.amazonaws.com``, the legacy ``<region>.queue.amazonaws.com``, VPC endpoints),
so it is read from the URL, the only region that can sign for that host. Otherwise (moto,
ElasticMQ behind ``triggers.sqs_endpoint_url``) ``s3.region`` or boto3's own configuration
decides, and with an endpoint override anything will do, so ``us-east-1``. A URL that names
no region, with no endpoint override and no configured region, is a :class:`QueueConfigError`,
reported once by the CLI rather than as botocore's NoRegionError traceback.

Shutdown: setting the stop event (SIGTERM in the CLI) lets the current poll finish, submit and
delete included, then :meth:`SqsListener.run` returns; the longest wait is one long poll
(``triggers.sqs_wait_seconds``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from tagger import metrics
from tagger.config import Settings
from tagger.submitting import Submitter
from tagger.triggers.parser import EventBatch, MalformedEvent, parse_notification
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
_DEFAULT_REGION: Final = "us-east-1"  # any region signs for a local SQS (moto, ElasticMQ)
# sqs.<region>.amazonaws.com, sqs-fips.<region>…, vpce-….sqs.<region>.vpce.amazonaws.com,
# <region>.queue.amazonaws.com (legacy), and the .amazonaws.com.cn partition of each.
_AWS_SQS_HOST: Final = re.compile(
    r"^(?:(?:[a-z0-9-]+\.)?sqs(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)(?:\.vpce)?"
    r"|(?P<legacy>[a-z]{2}(?:-[a-z]+)+-\d+)\.queue)\.amazonaws\.com(?:\.cn)?$"
)


class QueueConfigError(ValueError):
    """The queue URL or the region cannot work; a configuration mistake, not an outage."""


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


def region_from_url(url: str) -> str | None:
    """The AWS region an SQS queue URL (or endpoint URL) names, or None for any other host."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return None
    if host in ("queue.amazonaws.com", "sqs.amazonaws.com"):  # the oldest, us-east-1 forms
        return _DEFAULT_REGION
    match = _AWS_SQS_HOST.match(host)
    if match is None:
        return None
    region: str = match.group("region") or match.group("legacy")
    return region


def queue_region(queue_url: str, settings: Settings) -> str:
    """The region to sign for ``queue_url``: the one its AWS host names, else the endpoint
    override's, else ``s3.region``, else boto3's own (``AWS_REGION``, ``~/.aws/config``), else
    ``us-east-1`` when an endpoint override (moto, ElasticMQ) makes the region immaterial.

    Raises :class:`QueueConfigError` for a URL that is not a queue URL at all, or for a queue
    whose region nothing names.
    """
    try:
        parts = urlsplit(queue_url)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None or parts.scheme not in ("http", "https") or parts.path.strip("/") == "":
        raise QueueConfigError(
            f"not an SQS queue URL: {queue_url!r} "
            "(expected https://sqs.<region>.amazonaws.com/<account>/<queue>)"
        )
    endpoint = settings.triggers.sqs_endpoint_url
    region = (
        region_from_url(queue_url)
        or (region_from_url(endpoint) if endpoint else None)
        or settings.s3.region
        or boto3.session.Session().region_name
        or (_DEFAULT_REGION if endpoint else None)
    )
    if region is None:
        raise QueueConfigError(
            f"cannot tell the region of queue {queue_url}: set TAGGER_S3__REGION (or AWS_REGION), "
            "or TAGGER_TRIGGERS__SQS_ENDPOINT_URL for a local SQS"
        )
    return region


def sqs_client(settings: Settings, queue_url: str) -> SQSClient:
    """An SQS client for ``queue_url`` whose read timeout outlasts the long poll.

    Raises :class:`QueueConfigError` when the URL or the region cannot work.
    """
    wait = settings.triggers.sqs_wait_seconds
    return boto3.client(
        "sqs",
        region_name=queue_region(queue_url, settings),
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
        self._sqs = sqs or sqs_client(settings, queue_url)
        self._confirmer = confirmer or SubscriptionConfirmer(settings)

    def check(self) -> None:
        """Fail fast (ClientError/BotoCoreError) when the queue does not exist or is not ours."""
        self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])

    def run(self, stop: threading.Event) -> PollStats:
        """Poll until ``stop`` is set; returns the totals. Transient SQS errors and submit
        failures back off (interruptibly) and go on; so does anything unexpected, logged with
        its traceback: the listener outlives whatever one poll brings."""
        totals = PollStats()
        backoff = 1.0
        while not stop.is_set():
            try:
                stats = self.poll_once()
            except (ClientError, BotoCoreError) as exc:
                log.error(
                    "sqs receive failed", extra={"queue_url": self.queue_url, "error": str(exc)}
                )
                stats = PollStats(failed=True)
            except Exception:  # a bug must not end the loop; the messages come back
                log.error("sqs poll failed", extra={"queue_url": self.queue_url}, exc_info=True)
                stats = PollStats(failed=True)
            totals.add(stats)
            if stats.failed:
                stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            else:
                backoff = 1.0
        log.info("sqs listener stopped", extra=totals.model_dump(exclude={"job_id", "failed"}))
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
        metrics.count_listener(
            "sqs",
            received=stats.received,
            malformed=stats.malformed,
            submitted=stats.submitted,
            submit_failures=int(stats.failed),
        )
        if stats.submitted or stats.malformed or stats.kept:
            log.info("sqs poll", extra=stats.model_dump())
        return stats

    def _handle(self, messages: Sequence[MessageTypeDef], stats: PollStats) -> list[MessageTypeDef]:
        """Messages that may be deleted now; the rest are left for redelivery."""
        done: list[MessageTypeDef] = []
        carrying: list[tuple[MessageTypeDef, EventBatch]] = []
        for message in messages:
            try:
                batch = self._read(message, stats)
                confirmed = batch is None or not batch.confirmations or self._confirm(batch)
            except Exception:  # a bug, not a bad body: keep the message, keep the loop
                log.error(
                    "sqs message failed; kept for redelivery",
                    extra={"message_id": message.get("MessageId")},
                    exc_info=True,
                )
                stats.kept += 1
                continue
            if batch is None:
                done.append(message)
                continue
            if not confirmed:
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
                "submit failed; messages left for redelivery",
                extra={"count": len(carrying), "error": str(exc)},
            )
            stats.kept += len(carrying)
            stats.failed = True
            return done
        stats.submitted = len(refs)
        stats.job_id = job.id
        return done + [message for message, _ in carrying]

    def _read(self, message: MessageTypeDef, stats: PollStats) -> EventBatch | None:
        """The message's notification, or None for a malformed one (logged once, counted; it
        is deleted with the handled ones)."""
        try:
            batch = parse_notification(message.get("Body", ""), self._triggers)
        except MalformedEvent as exc:
            log.warning(
                "malformed message deleted",
                extra={"message_id": message.get("MessageId"), "reason": exc.reason},
            )
            stats.malformed += 1
            return None
        stats.skipped += len(batch.skipped)
        return batch

    def _confirm(self, batch: EventBatch) -> bool:
        try:
            for request in batch.confirmations:
                self._confirmer.confirm(request)
        except ConfirmationFailed as exc:
            log.error("sns confirmation failed; message kept", extra={"error": str(exc)})
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
                log.error("sqs delete failed", extra={"count": len(chunk), "error": str(exc)})
                continue
            for failure in reply.get("Failed", []):
                log.error(
                    "sqs delete refused",
                    extra={"entry_id": failure.get("Id"), "code": failure.get("Code")},
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
                log.warning("sqs visibility extension failed", extra={"error": str(exc)})
                continue
            log.info(
                "sqs visibility extended",
                extra={"count": len(reply.get("Successful", [])), "seconds": self._timeout},
            )
