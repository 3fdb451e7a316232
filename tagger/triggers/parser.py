"""Bucket notifications → photo references, whatever envelope carried them.

S3 (and MinIO) announce a new object in one record format, but the record reaches us wrapped in
different envelopes: straight from S3 to SQS or to a Lambda, inside an SNS notification (in SQS,
over HTTP, or in a Lambda's SNS record), as an EventBridge "Object Created" event, or as MinIO's
webhook body. One parser unwraps them all, so the SQS listener, the webhook listener and the
Lambda handler can never disagree on which objects are photos to tag.

It is pure: no network, no client, no broker (an import-linter contract keeps it so). What to do
with a subscription confirmation (confirm it) or with the refs (submit them) is the caller's
business; see :mod:`~tagger.triggers.sqs`, :mod:`~tagger.triggers.webhook`,
:mod:`~tagger.triggers.sns` and :mod:`~tagger.triggers.aws_lambda`.

Hostile input: whoever can send to the queue or the webhook chooses the bytes, so every JSON
text is bounded *before* it is parsed: its size (``triggers.http_max_body_bytes``, the one
body-size setting; an SQS message is at most 1 MiB anyway) and its bracket nesting
(:data:`_MAX_JSON_NESTING`, by a linear scan outside strings), with :func:`json.loads` guarded
against :class:`RecursionError` as well. A body of 50 000 ``[`` would otherwise raise
RecursionError, which is no :class:`MalformedEvent` and so escaped every listener's error
handling, killing the SQS listener on each redelivery of the same poison message. Records are
bounded too (their number, the key's length), and values quoted in a reason are shortened with
:mod:`reprlib`, so a reason is always one short log line.

Duplicates: S3 delivers at least once, and a multipart upload can emit two records for one
object, so records are deduplicated here by (bucket, key, ETag or sequencer) within one parse
or one merged batch. Across batches nothing is remembered: the workers' idempotence (same ETag
and model version = no work) makes a late duplicate cost one store lookup, not an inference.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import Any, Final
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

from tagger.config import TriggerSettings
from tagger.errors import ErrorCode, PermanentError
from tagger.schemas import PhotoRef

_SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_MAX_DEPTH = 4  # S3 → SNS → SQS → Lambda is three envelopes; more is not a real notification
# Brackets open at once in one JSON text. A real notification needs about six (MinIO's body is
# the deepest); 64 leaves room for any sender's extras and stays far below the interpreter's
# recursion limit, whatever the caller's stack depth.
_MAX_JSON_NESTING: Final = 64
# A Lambda's SQS batch holds at most 10 000 records; S3 itself sends one per notification.
_MAX_RECORDS: Final = 10_000
_MAX_KEY_BYTES: Final = 1024  # S3's (and MinIO's) limit on an object key, UTF-8 encoded
# A JSON string, to its closing quote or to the end if it has none, so a match never fails
# and restarts: removing the strings stays linear in the length of the text.
_STRING: Final = re.compile(r'"(?:[^"\\]+|\\.)*"?', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_OPEN_MINUS: Final = ord("[") + 1  # ord("[") → +1, ord("]") → -1


class MalformedEvent(PermanentError):
    """The payload is not an S3 event notification we can read; retrying cannot fix it.

    The reason names where in the document the problem is (``Records[0].s3.object.key``), so a
    log line is enough to find the sender's mistake.
    """

    code = ErrorCode.MALFORMED_EVENT


class EventTooLarge(MalformedEvent):
    """The payload is bigger than any notification we accept; the webhook answers 413, the
    other faces treat it as any malformed event."""


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


def parse_notification(
    payload: bytes | str | Mapping[str, Any], triggers: TriggerSettings
) -> EventBatch:
    """Every photo an S3-style notification announces, filtered by ``triggers``.

    Raises :class:`MalformedEvent` for a payload that is not JSON, not a notification at all,
    or beyond the bounds (:class:`EventTooLarge` for size); never RecursionError, whatever the
    bytes. Records that are notifications but not of a new photo (a TestEvent, a deletion, a
    key outside the prefix or suffixes) are *skipped*, not errors.
    """
    limit = triggers.http_max_body_bytes
    if isinstance(payload, Mapping):
        document: Any = payload
    elif isinstance(payload, str | bytes):
        document = _load(payload, "$", limit)
    else:  # the typing says otherwise, but a Lambda record's body may be anything
        raise MalformedEvent(f"$: expected JSON text or an object, got {_kind(payload)}")
    batch = EventBatch()
    _walk(document, "$", 0, limit, triggers, batch)
    return batch._deduplicated()


def _load(payload: bytes | str, where: str, limit: int) -> Any:
    """One JSON text, parsed only once it is known to be small and shallow enough."""
    if len(payload) > limit:
        raise EventTooLarge(f"{where}: {len(payload)} bytes or more, over {limit}")
    try:
        text = (
            payload.decode(json.detect_encoding(payload), "surrogatepass")
            if isinstance(payload, bytes)
            else payload
        )
        if len(text.encode("utf-8", "surrogatepass")) > limit:
            raise EventTooLarge(f"{where}: over {limit} bytes")
    except UnicodeError as exc:
        raise MalformedEvent(f"{where}: not JSON ({_shorten(exc)})") from exc
    depth = _nesting(text)
    if depth > _MAX_JSON_NESTING:
        raise MalformedEvent(f"{where}: JSON nested more than {_MAX_JSON_NESTING} deep")
    try:
        return json.loads(text)
    except RecursionError as exc:  # the scan should have caught it; this is the second guard
        raise MalformedEvent(f"{where}: JSON nested too deep") from exc
    except ValueError as exc:  # JSONDecodeError, or an integer of thousands of digits
        raise MalformedEvent(f"{where}: not JSON ({_shorten(exc)})") from exc


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside strings. Linear and in C throughout: the string
    pattern cannot backtrack (an unterminated string runs to the end), and the depth is a
    running sum over the brackets left, ``[`` and ``{`` counting +1, ``]`` and ``}`` -1."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).replace("{", "[").replace("}", "]")
    return max(accumulate(map(_OPEN_MINUS.__sub__, brackets.encode("ascii"))), default=0)


def _walk(
    document: Any,
    where: str,
    depth: int,
    limit: int,
    triggers: TriggerSettings,
    batch: EventBatch,
) -> None:
    if depth > _MAX_DEPTH:
        raise MalformedEvent(f"{where}: envelopes nested more than {_MAX_DEPTH} deep")
    if not isinstance(document, Mapping):
        raise MalformedEvent(f"{where}: expected a JSON object, got {_kind(document)}")
    if document.get("Type") in _SNS_TYPES and "TopicArn" in document:
        _sns(document, where, depth, limit, triggers, batch)
    elif document.get("Event") == "s3:TestEvent":
        batch.skipped.append("s3:TestEvent")
    elif document.get("source") == "aws.s3" and "detail-type" in document:
        _eventbridge(document, where, triggers, batch)
    elif "Records" in document:
        _records(document["Records"], f"{where}.Records", depth, limit, triggers, batch)
    else:
        names = sorted(_shorten(key) for key in list(document)[:64])
        keys = ", ".join(names[:8]) or "none"
        raise MalformedEvent(f"{where}: not an S3 event notification (keys: {keys})")


def _sns(
    envelope: Mapping[str, Any],
    where: str,
    depth: int,
    limit: int,
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
        at = f"{where}.Message"
        _walk(_load(message, at, limit), at, depth + 1, limit, triggers, batch)


def _records(
    records: Any,
    where: str,
    depth: int,
    limit: int,
    triggers: TriggerSettings,
    batch: EventBatch,
) -> None:
    if not isinstance(records, list):
        raise MalformedEvent(f"{where}: expected a list, got {_kind(records)}")
    if len(records) > _MAX_RECORDS:
        raise MalformedEvent(f"{where}: {len(records)} records, over {_MAX_RECORDS}")
    for index, record in enumerate(records):
        at = f"{where}[{index}]"
        if not isinstance(record, Mapping):
            raise MalformedEvent(f"{at}: expected a JSON object, got {_kind(record)}")
        if record.get("eventSource") == "aws:sqs":  # a Lambda's SQS event
            body = _string(record, "body", at)
            _walk(_load(body, f"{at}.body", limit), f"{at}.body", depth + 1, limit, triggers, batch)
        elif record.get("EventSource") == "aws:sns":  # a Lambda's SNS event
            _walk(_mapping(record, "Sns", at), f"{at}.Sns", depth + 1, limit, triggers, batch)
        elif "s3" in record:
            _s3_record(record, at, triggers, batch)
        else:
            source = record.get("eventSource") or record.get("EventSource") or "unknown"
            batch.skipped.append(f"{at}: not an S3 record (source {_shorten(source)})")


def _s3_record(
    record: Mapping[str, Any], where: str, triggers: TriggerSettings, batch: EventBatch
) -> None:
    event = _string(record, "eventName", where).removeprefix("s3:")
    s3 = _mapping(record, "s3", where)
    bucket = _string(_mapping(s3, "bucket", f"{where}.s3"), "name", f"{where}.s3.bucket")
    obj = _mapping(s3, "object", f"{where}.s3")
    key = _key(_string(obj, "key", f"{where}.s3.object"), f"{where}.s3.object.key")
    _accept(
        ObjectCreated(
            bucket=bucket,
            key=key,
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
        batch.skipped.append(f"EventBridge {_shorten(detail_type)}")
        return
    detail = _mapping(event, "detail", where)
    at = f"{where}.detail"
    obj = _mapping(detail, "object", at)
    reason = detail.get("reason")
    _accept(
        ObjectCreated(
            bucket=_string(_mapping(detail, "bucket", at), "name", f"{at}.bucket"),
            # EventBridge encodes keys as the S3 records do
            key=_key(_string(obj, "key", f"{at}.object"), f"{at}.object.key"),
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


def _key(raw: str, where: str) -> str:
    """The URL-decoded key; longer than S3 allows is not a real notification, and a megabyte
    of key would otherwise travel on into the job, the store and the logs."""
    key = unquote_plus(raw)
    if len(raw) > 3 * _MAX_KEY_BYTES or len(key.encode("utf-8", "surrogatepass")) > _MAX_KEY_BYTES:
        raise MalformedEvent(f"{where}: longer than {_MAX_KEY_BYTES} bytes")
    return key


def _shorten(value: object) -> str:
    """A value quoted in a reason: a few dozen characters and a few levels at most, whatever
    was sent (``repr`` of a deeply nested list would itself raise RecursionError)."""
    if isinstance(value, BaseException):
        value = str(value)
    if isinstance(value, str):
        return value if len(value) <= 60 else f"{value[:57]}..."
    return reprlib.repr(value)


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
        found = "missing" if name not in parent else f"got {_kind(value)} {_shorten(value)}"
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
        raise MalformedEvent(
            f"{where}.size: expected a non-negative integer, got {_shorten(value)}"
        )
    return value
