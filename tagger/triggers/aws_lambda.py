"""The AWS Lambda entry point, ``tagger.triggers.aws_lambda.lambda_handler`` (also reachable as
``tagger.triggers.lambda_handler``), for a function that S3 invokes directly, or that reads the
notifications from SQS or SNS.

It lives apart from :mod:`tagger.triggers.parser` because it builds a :class:`TaggerClient`, and
the layer contract keeps the pure parser from importing the client.

Failure policy follows who retries:

- With an SQS event source, each record is read on its own. A record that is not an S3
  notification (not JSON, nested too deep, too large…) is logged and dropped: a retry cannot
  fix it, so it is *not* a failure, and Lambda deletes it with the batch. A record whose photos
  could not be submitted (broker or store down), or that hit an unexpected error, is returned
  in ``batchItemFailures``, so SQS redelivers exactly those and not the good ones. This needs
  ``FunctionResponseTypes: ["ReportBatchItemFailures"]`` on the event source mapping; without
  it Lambda ignores the list and deletes the whole batch.
- For a direct or SNS invocation, a payload that is not a notification is logged and reported
  in the returned summary (``malformed``), never raised: an asynchronous invocation would
  otherwise be retried twice for nothing. A failed submit raises, so Lambda's own retries and
  the function's failure destination keep the event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from tagger.client import TaggerClient
from tagger.config import Settings, TriggerSettings
from tagger.submitting import Submitter
from tagger.triggers.parser import EventBatch, MalformedEvent, parse_notification

log = logging.getLogger(__name__)

OpenSubmitter = Callable[[], AbstractContextManager[Submitter]]


def lambda_handler(event: Mapping[str, Any], context: object) -> dict[str, Any]:
    """Submit the photos ``event`` announces; returns what was done (and, for an SQS event
    source, the ``batchItemFailures`` Lambda hands back to SQS)."""
    settings = Settings()
    return handle(event, settings.triggers, lambda: TaggerClient(settings))


def handle(
    event: Mapping[str, Any], triggers: TriggerSettings, open_submitter: OpenSubmitter
) -> dict[str, Any]:
    """The handler's work with the submitter passed in, so tests need no broker; the client
    is opened only when there is something to submit."""
    records = _sqs_records(event)
    if records is None:
        return _direct(event, triggers, open_submitter)
    return _from_sqs(records, triggers, open_submitter)


@dataclass
class Collected:
    """One SQS-sourced invocation, read: the merged photos, which messages carry them, the
    reasons of the dropped (malformed) records and the messages that must come back."""

    batch: EventBatch = field(default_factory=EventBatch)
    carriers: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def collect(records: list[Mapping[str, Any]], triggers: TriggerSettings) -> Collected:
    """Read every SQS record on its own, so one bad body costs only itself."""
    batches: list[EventBatch] = []
    collected = Collected()
    for index, record in enumerate(records):
        message_id = str(record.get("messageId") or "")
        try:
            batch = parse_notification(record.get("body", ""), triggers)
        except MalformedEvent as exc:
            log.warning(
                "malformed sqs record dropped",
                extra={"message_id": message_id, "reason": exc.reason},
            )
            collected.malformed.append(f"Records[{index}]: {exc.reason}")
            continue
        except Exception:  # a bug, not a bad body: let SQS bring this one back
            log.error(
                "sqs record failed; returned for redelivery",
                extra={"message_id": message_id},
                exc_info=True,
            )
            collected.failures.append(message_id)
            continue
        batches.append(batch)
        if batch.objects:
            collected.carriers.append(message_id)
    collected.batch = EventBatch.merge(batches)
    return collected


def _from_sqs(
    records: list[Mapping[str, Any]], triggers: TriggerSettings, open_submitter: OpenSubmitter
) -> dict[str, Any]:
    collected = collect(records, triggers)
    batch = collected.batch
    _ignore_confirmations(batch)
    refs = batch.refs()
    job_id: str | None = None
    failures = list(collected.failures)
    if refs:
        try:
            job_id = _submit(refs, open_submitter)
        except Exception as exc:  # broker or store down: these messages must come back
            log.error(
                "submit failed; records returned for redelivery",
                extra={"records": len(collected.carriers), "error": str(exc)},
            )
            failures.extend(collected.carriers)
    submitted = len(refs) if job_id is not None else 0
    summary = _summary(job_id, refs if job_id else [], batch, collected.malformed)
    summary["batchItemFailures"] = [
        {"itemIdentifier": message_id} for message_id in dict.fromkeys(failures) if message_id
    ]
    _log_summary(summary, submitted, len(summary["batchItemFailures"]))
    return summary


def _direct(
    event: Mapping[str, Any], triggers: TriggerSettings, open_submitter: OpenSubmitter
) -> dict[str, Any]:
    try:
        batch = parse_notification(event, triggers)
    except MalformedEvent as exc:
        log.error("malformed lambda event dropped", extra={"reason": exc.reason})
        summary = _summary(None, [], EventBatch(), [exc.reason])
        _log_summary(summary, 0, 0)
        return summary
    _ignore_confirmations(batch)
    refs = batch.refs()
    job_id = _submit(refs, open_submitter) if refs else None  # raises: Lambda retries
    summary = _summary(job_id, refs, batch, [])
    _log_summary(summary, len(refs), 0)
    return summary


def _submit(refs: list[str], open_submitter: OpenSubmitter) -> str:
    with open_submitter() as submitter:
        return submitter.submit(refs).id


def _ignore_confirmations(batch: EventBatch) -> None:
    for request in batch.confirmations:  # a Lambda's SNS subscription never needs one
        log.warning("sns subscription confirmation ignored", extra={"topic": request.topic_arn})


def _summary(
    job_id: str | None, refs: list[str], batch: EventBatch, malformed: list[str]
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "submitted": len(refs),
        "refs": refs,
        "skipped": len(batch.skipped),
        "duplicates": batch.duplicates,
        "malformed": malformed,
    }


def _log_summary(summary: Mapping[str, Any], submitted: int, failures: int) -> None:
    """Counts only: the refs and reasons are in the returned summary, and one line must stay
    one line whatever the batch size."""
    fields = {
        "job_id": summary["job_id"],
        "submitted": submitted,
        "skipped": summary["skipped"],
        "duplicates": summary["duplicates"],
        "malformed": len(summary["malformed"]),
        "failures": failures,
    }
    log.info("lambda notification handled", extra=fields)


def _sqs_records(event: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The records of an SQS event source, or None for any other invocation."""
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        return None
    if all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records):
        return records
    return None
