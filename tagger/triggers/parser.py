"""Bucket notifications → photo references, whatever envelope carried them.

S3 (and MinIO) announce a new object in one record format, but the record reaches us wrapped in
different envelopes: straight from S3 to SQS or to a Lambda, inside an SNS notification (in SQS,
over HTTP, or in a Lambda's SNS record), as an EventBridge "Object Created" event, or as MinIO's
webhook body. One parser unwraps them all, so the SQS listener, the webhook listener and the
Lambda handler can never disagree on which objects are photos to tag.

It is pure: no network, no client. What to do with a subscription confirmation (confirm it) or
with the refs (submit them) is the caller's business; see ``triggers_sqs``, ``triggers_http``,
``triggers_sns`` and ``triggers_lambda``.

Duplicates: S3 delivers at least once, and a multipart upload can emit two records for one
object, so records are deduplicated here by (bucket, key, ETag or sequencer) within one parse
or one merged batch. Across batches nothing is remembered: the workers' idempotence (same ETag
and model version = no work) makes a late duplicate cost one store lookup, not an inference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

from tagger.config import TriggerSettings
from tagger.errors import PermanentError
from tagger.schemas import PhotoRef

_SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_MAX_DEPTH = 4  # S3 → SNS → SQS → Lambda is three envelopes; more is not a real notification


class MalformedEvent(PermanentError):
    """The payload is not an S3 event notification we can read; retrying cannot fix it.

    The reason names where in the document the problem is (``Records[0].s3.object.key``), so a
    log line is enough to find the sender's mistake.
    """

    code = "malformed_event"


class ObjectCreated(BaseModel):
    """One new object, its key already URL-decoded."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    event_name: str = Field(description="without the 's3:' prefix, e.g. ObjectCreated:Put")
    etag: str | None = None
    sequencer: str | None = None
    size: int | None = None

    @property
    def ref(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def identity(self) -> tuple[str, str, str]:
        """What makes two records the same upload: a redelivery or a multipart double."""
        return (self.bucket, self.key, self.etag or self.sequencer or "")


class SubscriptionConfirmation(BaseModel):
    """SNS asks to confirm a subscription before it delivers anything to it."""

    model_config = ConfigDict(frozen=True)

    topic_arn: str
    token: str
    subscribe_url: str | None = None


class EventBatch(BaseModel):
    """What one or more notifications asked for: objects to tag, records skipped (and why),
    subscription confirmations, and how many duplicate records were dropped."""

    objects: list[ObjectCreated] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    confirmations: list[SubscriptionConfirmation] = Field(default_factory=list)
    duplicates: int = 0

    def refs(self) -> list[str]:
        """Photo references, each once, in arrival order."""
        return list(dict.fromkeys(obj.ref for obj in self.objects))

    @classmethod
    def merge(cls, batches: Iterable[EventBatch]) -> EventBatch:
        """One batch of several notifications (one SQS poll), duplicates across them dropped."""
        merged = cls()
        for batch in batches:
            merged.skipped.extend(batch.skipped)
            merged.confirmations.extend(batch.confirmations)
            merged.duplicates += batch.duplicates
            merged.objects.extend(batch.objects)
        return merged._deduplicated()

    def _deduplicated(self) -> EventBatch:
        seen: dict[tuple[str, str, str], ObjectCreated] = {}
        for obj in self.objects:
            seen.setdefault(obj.identity, obj)
        dropped = len(self.objects) - len(seen)
        return self.model_copy(
            update={"objects": list(seen.values()), "duplicates": self.duplicates + dropped}
        )


class SubmittedJob(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def total(self) -> int: ...


class Submitter(Protocol):
    """What the listeners need of :class:`tagger.client.TaggerClient`: a protocol, so they
    depend on one method rather than on the broker and store behind it, and a test can pass a
    recording fake."""

    def submit(self, refs: Iterable[str | PhotoRef]) -> SubmittedJob: ...


def parse_notification(
    payload: bytes | str | Mapping[str, Any], triggers: TriggerSettings
) -> EventBatch:
    """Every photo an S3-style notification announces, filtered by ``triggers``.

    Raises :class:`MalformedEvent` for a payload that is not JSON or not a notification at all;
    records that are notifications but not of a new photo (a TestEvent, a deletion, a key
    outside the prefix or suffixes) are *skipped*, not errors.
    """
    document = _load(payload, "$")
    batch = EventBatch()
    _walk(document, "$", 0, triggers, batch)
    return batch._deduplicated()


def _load(payload: bytes | str | Mapping[str, Any], where: str) -> Any:
    if isinstance(payload, Mapping):
        return payload
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"{where}: not JSON ({exc})") from exc


def _walk(
    document: Any, where: str, depth: int, triggers: TriggerSettings, batch: EventBatch
) -> None:
    if depth > _MAX_DEPTH:
        raise MalformedEvent(f"{where}: envelopes nested more than {_MAX_DEPTH} deep")
    if not isinstance(document, Mapping):
        raise MalformedEvent(f"{where}: expected a JSON object, got {_kind(document)}")
    if document.get("Type") in _SNS_TYPES and "TopicArn" in document:
        _sns(document, where, depth, triggers, batch)
    elif document.get("Event") == "s3:TestEvent":
        batch.skipped.append("s3:TestEvent")
    elif document.get("source") == "aws.s3" and "detail-type" in document:
        _eventbridge(document, where, triggers, batch)
    elif "Records" in document:
        _records(document["Records"], f"{where}.Records", depth, triggers, batch)
    else:
        keys = ", ".join(sorted(str(key) for key in document)[:8]) or "none"
        raise MalformedEvent(f"{where}: not an S3 event notification (keys: {keys})")


def _sns(
    envelope: Mapping[str, Any],
    where: str,
    depth: int,
    triggers: TriggerSettings,
    batch: EventBatch,
) -> None:
    kind = envelope["Type"]
    topic = _string(envelope, "TopicArn", where)
    if kind == "SubscriptionConfirmation":
        batch.confirmations.append(
            SubscriptionConfirmation(
                topic_arn=topic,
                token=_string(envelope, "Token", where),
                subscribe_url=_optional_string(envelope, "SubscribeURL", where),
            )
        )
    elif kind == "UnsubscribeConfirmation":
        batch.skipped.append(f"SNS UnsubscribeConfirmation from {topic}")
    else:
        message = _string(envelope, "Message", where)
        _walk(_load(message, f"{where}.Message"), f"{where}.Message", depth + 1, triggers, batch)


def _records(
    records: Any, where: str, depth: int, triggers: TriggerSettings, batch: EventBatch
) -> None:
    if not isinstance(records, list):
        raise MalformedEvent(f"{where}: expected a list, got {_kind(records)}")
    for index, record in enumerate(records):
        at = f"{where}[{index}]"
        if not isinstance(record, Mapping):
            raise MalformedEvent(f"{at}: expected a JSON object, got {_kind(record)}")
        if record.get("eventSource") == "aws:sqs":  # a Lambda's SQS event
            body = _string(record, "body", at)
            _walk(_load(body, f"{at}.body"), f"{at}.body", depth + 1, triggers, batch)
        elif record.get("EventSource") == "aws:sns":  # a Lambda's SNS event
            _walk(_mapping(record, "Sns", at), f"{at}.Sns", depth + 1, triggers, batch)
        elif "s3" in record:
            _s3_record(record, at, triggers, batch)
        else:
            source = record.get("eventSource") or record.get("EventSource") or "unknown"
            batch.skipped.append(f"{at}: not an S3 record (source {source})")


def _s3_record(
    record: Mapping[str, Any], where: str, triggers: TriggerSettings, batch: EventBatch
) -> None:
    event = _string(record, "eventName", where).removeprefix("s3:")
    s3 = _mapping(record, "s3", where)
    bucket = _string(_mapping(s3, "bucket", f"{where}.s3"), "name", f"{where}.s3.bucket")
    obj = _mapping(s3, "object", f"{where}.s3")
    key = _string(obj, "key", f"{where}.s3.object")
    _accept(
        ObjectCreated(
            bucket=bucket,
            key=unquote_plus(key),
            event_name=event,
            etag=_etag(obj, f"{where}.s3.object"),
            sequencer=_optional_string(obj, "sequencer", f"{where}.s3.object"),
            size=_size(obj, f"{where}.s3.object"),
        ),
        triggers,
        batch,
    )


def _eventbridge(
    event: Mapping[str, Any], where: str, triggers: TriggerSettings, batch: EventBatch
) -> None:
    detail_type = event["detail-type"]
    if detail_type != "Object Created":
        batch.skipped.append(f"EventBridge {detail_type}")
        return
    detail = _mapping(event, "detail", where)
    at = f"{where}.detail"
    obj = _mapping(detail, "object", at)
    reason = detail.get("reason")
    _accept(
        ObjectCreated(
            bucket=_string(_mapping(detail, "bucket", at), "name", f"{at}.bucket"),
            # EventBridge encodes keys as the S3 records do
            key=unquote_plus(_string(obj, "key", f"{at}.object")),
            event_name=f"ObjectCreated:{reason}" if isinstance(reason, str) else "ObjectCreated",
            etag=_etag(obj, f"{at}.object"),
            sequencer=_optional_string(obj, "sequencer", f"{at}.object"),
            size=_size(obj, f"{at}.object"),
        ),
        triggers,
        batch,
    )


def _accept(obj: ObjectCreated, triggers: TriggerSettings, batch: EventBatch) -> None:
    reason = _rejection(obj, triggers)
    if reason is None:
        batch.objects.append(obj)
    else:
        batch.skipped.append(reason)


def _rejection(obj: ObjectCreated, triggers: TriggerSettings) -> str | None:
    if not obj.event_name.startswith("ObjectCreated"):
        return f"{obj.event_name}: {obj.ref}"
    if not _round_trips(obj):
        return f"key cannot be written as an s3:// reference: {obj.ref!r}"
    if triggers.buckets and obj.bucket not in triggers.buckets:
        return f"bucket not listened to: {obj.ref}"
    if not obj.key.startswith(triggers.prefix):
        return f"outside prefix {triggers.prefix!r}: {obj.ref}"
    suffixes = tuple(suffix.lower() for suffix in triggers.suffixes)
    if suffixes and not obj.key.lower().endswith(suffixes):
        return f"not a photo suffix: {obj.ref}"
    return None


def _round_trips(obj: ObjectCreated) -> bool:
    """A key with ``?``, ``#`` or a NUL byte would name a *different* object once written as
    ``s3://bucket/key``; such a record is skipped rather than tagging the wrong photo."""
    try:
        return PhotoRef(uri=obj.ref).bucket_key == (obj.bucket, obj.key)
    except ValueError:
        return False


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _mapping(parent: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = parent.get(name)
    if not isinstance(value, Mapping):
        found = "missing" if name not in parent else f"a {_kind(value)}"
        raise MalformedEvent(f"{where}.{name}: expected an object, {found}")
    return value


def _string(parent: Mapping[str, Any], name: str, where: str) -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not value:
        found = "missing" if name not in parent else f"got {_kind(value)} {value!r}"[:80]
        raise MalformedEvent(f"{where}.{name}: expected a non-empty string, {found}")
    return value


def _optional_string(parent: Mapping[str, Any], name: str, where: str) -> str | None:
    value = parent.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"{where}.{name}: expected a string, got {_kind(value)}")
    return value


def _etag(obj: Mapping[str, Any], where: str) -> str | None:
    """``eTag`` in S3 and MinIO records, ``etag`` in EventBridge; quotes stripped."""
    name = "eTag" if "eTag" in obj else "etag"
    value = _optional_string(obj, name, where)
    return value.strip('"') if value else None


def _size(obj: Mapping[str, Any], where: str) -> int | None:
    value = obj.get("size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedEvent(f"{where}.size: expected a non-negative integer, got {value!r}")
    return value
