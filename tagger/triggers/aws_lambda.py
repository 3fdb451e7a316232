"""The AWS Lambda entry point, ``tagger.triggers.lambda_handler``, for a function that S3
invokes directly, or that reads the notifications from SQS or SNS.

It lives apart from :mod:`tagger.triggers` because it builds a :class:`TaggerClient`, and the
layer contract keeps the pure parser from importing the client.

Failure policy follows who retries: with an SQS event source, a record that is not an S3
notification is logged and counted (returning normally lets Lambda delete it; a retry cannot
fix it) while a failed submit raises, so Lambda retries and SQS redelivers the whole batch;
for a direct or SNS invocation, a payload that is not a notification at all raises
:class:`~tagger.triggers.MalformedEvent`, which shows in the function's errors where a wiring
mistake belongs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tagger.client import TaggerClient
from tagger.config import Settings, TriggerSettings
from tagger.triggers.parser import EventBatch, MalformedEvent, parse_notification

log = logging.getLogger(__name__)


def lambda_handler(event: Mapping[str, Any], context: object) -> dict[str, Any]:
    """Submit the photos ``event`` announces; returns what was done, for the function's log."""
    settings = Settings()
    batch, malformed = collect(event, settings.triggers)
    refs = batch.refs()
    for request in batch.confirmations:  # a Lambda's SNS subscription never needs one
        log.warning("sns subscription confirmation ignored topic=%s", request.topic_arn)
    job_id: str | None = None
    if refs:
        with TaggerClient(settings) as client:
            job_id = client.submit(refs).id
    summary: dict[str, Any] = {
        "job_id": job_id,
        "submitted": len(refs),
        "refs": refs,
        "skipped": len(batch.skipped),
        "duplicates": batch.duplicates,
        "malformed": malformed,
    }
    log.info("lambda notification handled %s", summary, extra=summary)
    return summary


def collect(event: Mapping[str, Any], triggers: TriggerSettings) -> tuple[EventBatch, list[str]]:
    """The photos of one invocation and the reasons of the SQS records that were unreadable."""
    records = _sqs_records(event)
    if records is None:
        return parse_notification(event, triggers), []
    batches: list[EventBatch] = []
    malformed: list[str] = []
    for index, record in enumerate(records):
        try:
            batches.append(parse_notification(record.get("body", ""), triggers))
        except MalformedEvent as exc:
            message_id = record.get("messageId")
            log.warning("malformed sqs record dropped id=%s reason=%s", message_id, exc)
            malformed.append(f"Records[{index}]: {exc.reason}")
    return EventBatch.merge(batches), malformed


def _sqs_records(event: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The records of an SQS event source, or None for any other invocation."""
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        return None
    if all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records):
        return records
    return None
