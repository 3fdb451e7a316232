"""Bucket notifications → refs: every envelope shape, the filters, duplicates, malformed and
hostile input (deep nesting, huge bodies and records); the SQS listener's delete/keep rules on a
recording SQS fake; the Lambda handler's batchItemFailures; the queue's region from its URL;
the webhook on a real loopback socket, and its access log; SNS confirmation through botocore's
Stubber; the parser's import purity."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from pydantic import SecretStr

from tagger.config import S3Settings, Settings, TriggerSettings
from tagger.errors import ErrorCode
from tagger.schemas import PhotoRef
from tagger.submitting import Submitter
from tagger.triggers.aws_lambda import handle
from tagger.triggers.parser import EventBatch, EventTooLarge, MalformedEvent, parse_notification
from tagger.triggers.sns import ConfirmationFailed, SubscriptionConfirmer
from tagger.triggers.sqs import (
    PollStats,
    QueueConfigError,
    SqsListener,
    queue_region,
    region_from_url,
)
from tagger.triggers.webhook import WebhookListener

TOPIC = "arn:aws:sns:eu-west-1:123456789012:photo-uploads"
DEFAULTS = TriggerSettings()


# -- payloads shaped as S3, SNS, EventBridge, MinIO and Lambda send them ---------------------


def s3_record(
    key: str,
    *,
    bucket: str = "photos",
    event: str = "ObjectCreated:Put",
    etag: str | None = "0123456789abcdef0123456789abcdef",
    sequencer: str = "0055AED6DCD90281E5",
    source: str = "aws:s3",
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": 1024, "sequencer": sequencer}
    if etag is not None:
        obj["eTag"] = etag
    return {
        "eventVersion": "2.1",
        "eventSource": source,
        "awsRegion": "eu-west-1",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURI"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "tagger",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def sns_envelope(message: dict[str, Any] | str) -> dict[str, Any]:
    body = message if isinstance(message, str) else json.dumps(message)
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": "Amazon S3 Notification",
        "Message": body,
        "Timestamp": "2024-05-01T12:00:01.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }


def subscription_confirmation(topic: str = TOPIC) -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a7",
        "TopicArn": topic,
        "Message": "You have chosen to subscribe to the topic. To confirm, visit SubscribeURL.",
        "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "Timestamp": "2024-05-01T12:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService.pem",
    }


def eventbridge_event(key: str, detail_type: str = "Object Created") -> dict[str, Any]:
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2024-05-01T12:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:s3:::photos"],
        "detail": {
            "version": "0",
            "bucket": {"name": "photos"},
            "object": {
                "key": key,
                "size": 5,
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "sequencer": "617f08299329d189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "reason": "PutObject",
        },
    }


def minio_payload(bucket: str, key: str) -> dict[str, Any]:
    """MinIO's webhook body: the decoded ``Key`` beside records whose key is query-escaped."""
    from urllib.parse import quote_plus

    record = s3_record(quote_plus(key), bucket=bucket, event="s3:ObjectCreated:Put")
    record["eventSource"] = "minio:s3"
    record["eventVersion"] = "2.0"
    return {"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}", "Records": [record]}


def s3_test_event() -> dict[str, Any]:
    return {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-05-01T12:00:00.000Z",
        "Bucket": "photos",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }


# -- the parser --------------------------------------------------------------------------------


def test_direct_s3_to_sqs_record_gives_the_ref() -> None:
    batch = parse_notification(json.dumps(s3_event(s3_record("trips/cat.jpg"))), DEFAULTS)
    assert batch.refs() == ["s3://photos/trips/cat.jpg"]
    [obj] = batch.objects
    assert (obj.bucket, obj.key, obj.etag) == ("photos", "trips/cat.jpg", "0123456789abcdef" * 2)
    assert obj.event_name == "ObjectCreated:Put"


def test_keys_are_decoded_as_s3_encodes_them() -> None:
    batch = parse_notification(s3_event(s3_record("my+photo%281%29.jpg")), DEFAULTS)
    assert batch.refs() == ["s3://photos/my photo(1).jpg"]
    plus = parse_notification(s3_event(s3_record("c%2B%2B/x%3Ay.JPG")), DEFAULTS)
    assert plus.refs() == ["s3://photos/c++/x:y.JPG"]


def test_sns_wrapped_notification_is_unwrapped() -> None:
    body = json.dumps(sns_envelope(s3_event(s3_record("a.png"), s3_record("b.webp"))))
    assert parse_notification(body, DEFAULTS).refs() == ["s3://photos/a.png", "s3://photos/b.webp"]


def test_sns_subscription_confirmation_is_reported_not_tagged() -> None:
    batch = parse_notification(json.dumps(subscription_confirmation()), DEFAULTS)
    assert batch.refs() == []
    [request] = batch.confirmations
    assert request.topic_arn == TOPIC
    assert request.token.startswith("2336412f")


def test_eventbridge_object_created() -> None:
    batch = parse_notification(eventbridge_event("holiday/beach+day.jpeg"), DEFAULTS)
    assert batch.refs() == ["s3://photos/holiday/beach day.jpeg"]
    assert batch.objects[0].etag == "b1946ac92492d2347c6235b4d2611184"
    deleted = parse_notification(eventbridge_event("holiday/a.jpg", "Object Deleted"), DEFAULTS)
    assert deleted.refs() == []
    assert deleted.skipped == ["EventBridge Object Deleted"]


def test_minio_webhook_payload() -> None:
    batch = parse_notification(json.dumps(minio_payload("media", "up loads/ü.jpg")), DEFAULTS)
    assert batch.refs() == ["s3://media/up loads/ü.jpg"]
    assert batch.objects[0].event_name == "ObjectCreated:Put"


def sqs_record(message_id: str, body: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:uploads",
        "body": body,
    }


def run_lambda(event: dict[str, Any], submitter: RecordingSubmitter) -> dict[str, Any]:
    return handle(event, DEFAULTS, lambda: contextlib.nullcontext(submitter))


def test_lambda_shapes_direct_sqs_and_sns() -> None:
    submitter = RecordingSubmitter()
    direct = run_lambda(s3_event(s3_record("d.jpg")), submitter)
    assert direct["refs"] == ["s3://photos/d.jpg"] and "batchItemFailures" not in direct
    from_sqs = {
        "Records": [
            sqs_record("059f36b4", json.dumps(s3_event(s3_record("q.jpg")))),
            sqs_record("m2", "not json"),
            sqs_record("m3", json.dumps(sns_envelope(s3_event(s3_record("r.jpg"))))),
        ]
    }
    summary = run_lambda(from_sqs, submitter)
    assert summary["refs"] == ["s3://photos/q.jpg", "s3://photos/r.jpg"]
    assert submitter.calls[-1] == summary["refs"]
    assert len(summary["malformed"]) == 1
    assert summary["malformed"][0].startswith("Records[1]: $: not JSON")
    assert summary["batchItemFailures"] == []  # the malformed record is dropped, not retried
    from_sns = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "Sns": sns_envelope(s3_event(s3_record("n.jpg"))),
            }
        ]
    }
    assert run_lambda(from_sns, submitter)["refs"] == ["s3://photos/n.jpg"]


def test_lambda_from_sqs_reports_only_the_records_whose_submit_failed() -> None:
    poison = "[" * 50000 + "]" * 50000
    event = {
        "Records": [
            sqs_record("good-1", json.dumps(s3_event(s3_record("a.jpg")))),
            sqs_record("poison", poison),
            sqs_record("test-event", json.dumps(s3_test_event())),
            sqs_record("good-2", json.dumps(s3_event(s3_record("b.jpg")))),
        ]
    }
    summary = run_lambda(event, RecordingSubmitter(fail=True))
    assert summary["batchItemFailures"] == [
        {"itemIdentifier": "good-1"},
        {"itemIdentifier": "good-2"},
    ]
    assert summary["job_id"] is None and summary["submitted"] == 0
    assert summary["malformed"] == ["Records[1]: $: JSON nested more than 64 deep"]
    working = RecordingSubmitter()
    summary = run_lambda(event, working)
    assert summary["batchItemFailures"] == [] and summary["submitted"] == 2
    assert working.calls == [["s3://photos/a.jpg", "s3://photos/b.jpg"]]


def test_lambda_record_hitting_a_bug_is_returned_for_redelivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tagger.triggers.aws_lambda as aws_lambda

    def flaky(payload: Any, triggers: TriggerSettings) -> EventBatch:
        if payload == "boom":
            raise RuntimeError("a bug")
        return parse_notification(payload, triggers)

    monkeypatch.setattr(aws_lambda, "parse_notification", flaky)
    event = {
        "Records": [
            sqs_record("bug", "boom"),
            sqs_record("ok", json.dumps(s3_event(s3_record("ok.jpg")))),
        ]
    }
    submitter = RecordingSubmitter()
    summary = run_lambda(event, submitter)
    assert summary["batchItemFailures"] == [{"itemIdentifier": "bug"}]
    assert submitter.calls == [["s3://photos/ok.jpg"]]


def test_lambda_direct_malformed_event_is_reported_not_raised() -> None:
    deep: list[Any] = []
    for _ in range(5000):  # a nested structure repr() and naive recursion choke on
        deep = [deep]
    submitter = RecordingSubmitter()
    for event in ({"Records": deep}, {"Records": [deep]}, {"hello": deep}):
        summary = run_lambda(event, submitter)
        assert summary["submitted"] == 0 and len(summary["malformed"]) == 1
        assert len(summary["malformed"][0]) < 200
    sns_poison = {
        "Records": [
            {"EventSource": "aws:sns", "Sns": sns_envelope("[" * 50000 + "]" * 50000)},
        ]
    }
    summary = run_lambda(sns_poison, submitter)
    assert summary["malformed"] == ["$.Records[0].Sns.Message: JSON nested more than 64 deep"]
    assert submitter.calls == []


def test_lambda_direct_submit_failure_raises_so_lambda_retries() -> None:
    with pytest.raises(ConnectionError):
        run_lambda(s3_event(s3_record("d.jpg")), RecordingSubmitter(fail=True))


def test_lambda_handler_is_importable_lazily_from_the_package() -> None:
    import tagger.triggers
    from tagger.triggers import aws_lambda

    assert tagger.triggers.lambda_handler is aws_lambda.lambda_handler
    with pytest.raises(AttributeError):
        tagger.triggers.no_such_thing  # noqa: B018


def test_importing_the_parser_loads_no_broker_store_or_client() -> None:
    heavy = ("celery", "kombu", "sqlalchemy", "boto3", "redis", "tagger.client", "tagger.store")
    code = (
        "import sys, tagger.triggers.parser, tagger.triggers\n"
        f"print([m for m in sys.modules if m.startswith({heavy!r})])"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"


def test_test_event_and_other_event_types_are_skipped() -> None:
    assert parse_notification(json.dumps(s3_test_event()), DEFAULTS).skipped == ["s3:TestEvent"]
    wrapped = parse_notification(sns_envelope(s3_test_event()), DEFAULTS)
    assert wrapped.refs() == [] and wrapped.skipped == ["s3:TestEvent"]
    batch = parse_notification(
        s3_event(
            s3_record("gone.jpg", event="ObjectRemoved:Delete"),
            s3_record("tagged.jpg", event="ObjectTagging:Put"),
            s3_record("new.jpg", event="ObjectCreated:CompleteMultipartUpload"),
        ),
        DEFAULTS,
    )
    assert batch.refs() == ["s3://photos/new.jpg"]
    assert len(batch.skipped) == 2
    assert batch.skipped[0].startswith("ObjectRemoved:Delete")


def test_prefix_suffix_and_bucket_filters() -> None:
    event = s3_event(
        s3_record("uploads/a.JPG"),
        s3_record("uploads/notes.txt"),
        s3_record("uploads/folder/"),
        s3_record("elsewhere/b.jpg"),
        s3_record("uploads/c.heic", bucket="other"),
    )
    batch = parse_notification(event, TriggerSettings(prefix="uploads/", buckets=["photos"]))
    assert batch.refs() == ["s3://photos/uploads/a.JPG"]
    assert len(batch.skipped) == 4
    anything = parse_notification(event, TriggerSettings(suffixes=[]))
    assert len(anything.refs()) == 5
    only_txt = parse_notification(event, TriggerSettings(suffixes=[".TXT"]))
    assert only_txt.refs() == ["s3://photos/uploads/notes.txt"]


def test_duplicate_records_are_dropped() -> None:
    twice = s3_event(s3_record("m.jpg"), s3_record("m.jpg"))
    batch = parse_notification(twice, DEFAULTS)
    assert len(batch.objects) == 1 and batch.duplicates == 1
    other_upload = parse_notification(
        s3_event(s3_record("m.jpg"), s3_record("m.jpg", etag="ffff", sequencer="0056")), DEFAULTS
    )
    assert len(other_upload.objects) == 2  # two uploads of one key: both seen …
    assert other_upload.refs() == ["s3://photos/m.jpg"]  # … but the photo is submitted once
    merged = EventBatch.merge(
        [parse_notification(s3_event(s3_record("m.jpg")), DEFAULTS) for _ in range(3)]
    )
    assert merged.refs() == ["s3://photos/m.jpg"] and merged.duplicates == 2


def test_keys_with_query_and_fragment_characters_name_the_right_object() -> None:
    batch = parse_notification(s3_event(s3_record("what%3F.jpg"), s3_record("a%23b.jpg")), DEFAULTS)
    assert batch.refs() == ["s3://photos/what?.jpg", "s3://photos/a#b.jpg"]
    assert [PhotoRef(uri=ref).bucket_key for ref in batch.refs()] == [
        ("photos", "what?.jpg"),
        ("photos", "a#b.jpg"),
    ]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe not utf8", r"\$: not JSON"),
        ("{truncated", r"\$: not JSON"),
        ("[1, 2]", r"\$: expected a JSON object, got list"),
        ('{"hello": "world"}', r"\$: not an S3 event notification \(keys: hello\)"),
        ('{"Records": {"a": 1}}', r"\$\.Records: expected a list, got dict"),
        ('{"Records": ["x"]}', r"\$\.Records\[0\]: expected a JSON object, got str"),
        (
            json.dumps(s3_event({"eventName": "ObjectCreated:Put", "s3": {"bucket": {}}})),
            r"\$\.Records\[0\]\.s3\.bucket\.name: expected a non-empty string, missing",
        ),
        (
            json.dumps(s3_event({"eventName": "ObjectCreated:Put", "s3": "x"})),
            r"\$\.Records\[0\]\.s3: expected an object, a str",
        ),
        (json.dumps(sns_envelope("garbage")), r"\$\.Message: not JSON"),
        (
            json.dumps(
                s3_event(
                    {
                        **s3_record("a.jpg"),
                        "s3": {"bucket": {"name": "b"}, "object": {"key": "a.jpg", "size": -1}},
                    }
                )
            ),
            r"\.s3\.object\.size: expected a non-negative integer",
        ),
    ],
)
def test_malformed_payloads_raise_a_typed_error_naming_the_problem(
    payload: str | bytes, message: str
) -> None:
    with pytest.raises(MalformedEvent, match=message) as caught:
        parse_notification(payload, DEFAULTS)
    assert caught.value.code is ErrorCode.MALFORMED_EVENT
    assert caught.value.permanent


def test_envelopes_nested_too_deep_are_malformed() -> None:
    payload: dict[str, Any] = s3_event(s3_record("x.jpg"))
    for _ in range(6):
        payload = sns_envelope(payload)
    with pytest.raises(MalformedEvent, match="nested more than"):
        parse_notification(payload, DEFAULTS)


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 50000 + "]" * 50000,
        "{" * 50000,
        '{"Records": [' + '{"a": ' * 100 + "1" + "}" * 100 + "]}",
        ("[" * 50000 + "]" * 50000).encode(),
        json.dumps(sns_envelope("[" * 50000 + "]" * 50000)),
    ],
)
def test_deeply_nested_json_is_malformed_not_a_recursion_error(payload: str | bytes) -> None:
    with pytest.raises(MalformedEvent, match="JSON nested more than 64 deep"):
        parse_notification(payload, DEFAULTS)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    key = "[[[[" * 100 + '\\"{{{{' * 100 + ".jpg"
    payload = json.dumps(s3_event(s3_record(key)))
    assert parse_notification(payload, TriggerSettings(suffixes=[])).objects[0].key == key


def test_bodies_over_the_size_bound_are_refused_before_parsing() -> None:
    small = TriggerSettings(http_max_body_bytes=10_000)
    huge = json.dumps(s3_event(*(s3_record(f"{n}.jpg") for n in range(200))))
    for payload in (huge, huge.encode(), "é" * 6000):  # 6000 characters, 12000 bytes
        with pytest.raises(EventTooLarge, match="over 10000") as caught:
            parse_notification(payload, small)
        assert caught.value.code is ErrorCode.MALFORMED_EVENT
    with pytest.raises(EventTooLarge):  # inside an envelope too
        parse_notification({"Type": "Notification", "TopicArn": TOPIC, "Message": huge}, small)


def test_an_oversized_record_is_malformed() -> None:
    long_key = s3_event(s3_record("k" * 100_000 + ".jpg"))
    with pytest.raises(MalformedEvent, match=r"Records\[0\]\.s3\.object\.key: longer than 1024"):
        parse_notification(json.dumps(long_key), DEFAULTS)
    with pytest.raises(MalformedEvent, match="over 10000"):
        parse_notification({"Records": [{}] * 10_001}, DEFAULTS)
    huge_number = '{"Records": [' + "9" * 100_000 + "]}"
    with pytest.raises(MalformedEvent, match="not JSON"):
        parse_notification(huge_number, DEFAULTS)


def test_reasons_stay_one_short_line_whatever_was_sent() -> None:
    record = s3_record("a.jpg")
    record["eventName"] = ["x" * 100_000]
    with pytest.raises(MalformedEvent) as caught:
        parse_notification(s3_event(record), DEFAULTS)
    assert len(caught.value.reason) < 200
    with pytest.raises(MalformedEvent, match="not an S3 event") as caught:
        parse_notification({"k" * 100_000: 1}, DEFAULTS)
    assert len(caught.value.reason) < 200
    with pytest.raises(MalformedEvent, match="expected JSON text or an object, got null"):
        parse_notification(None, DEFAULTS)  # type: ignore[arg-type]


# -- the SQS listener, on a recording fake of the SQS API ------------------------------------


@dataclass
class FakeSqs:
    """Just enough of SQS: queued bodies, receipt handles, deletes and visibility calls."""

    bodies: list[str]
    deleted: list[str] = field(default_factory=list)
    visibility_calls: list[list[str]] = field(default_factory=list)

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        count = kwargs["MaxNumberOfMessages"]
        taken, self.bodies = self.bodies[:count], self.bodies[count:]
        return {
            "Messages": [
                {"MessageId": f"m{i}", "ReceiptHandle": f"h-{body[:20]}-{i}", "Body": body}
                for i, body in enumerate(taken)
            ]
        }

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        assert len(Entries) <= 10
        self.deleted.extend(entry["ReceiptHandle"] for entry in Entries)
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}

    def change_message_visibility_batch(
        self,
        QueueUrl: str,
        Entries: list[dict[str, Any]],
    ) -> dict[str, Any]:
        self.visibility_calls.append([entry["ReceiptHandle"] for entry in Entries])
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}


@dataclass
class FakeJob:
    id: str
    total: int


@dataclass
class RecordingSubmitter:
    fail: bool = False
    delay: float = 0.0
    calls: list[list[str]] = field(default_factory=list)

    def submit(self, refs: Iterable[str], *, force: bool = False) -> FakeJob:
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ConnectionError("broker down")
        uris = [str(ref) for ref in refs]
        self.calls.append(uris)
        return FakeJob(id=f"job-{len(self.calls)}", total=len(uris))

    def queue_depth(self) -> int:
        return 0


def _satisfies_the_protocol(submitter: RecordingSubmitter) -> Submitter:
    return submitter  # mypy checks the recording fake against tagger.submitting.Submitter


def listener_for(sqs: FakeSqs, submitter: RecordingSubmitter, **triggers: Any) -> SqsListener:
    settings = Settings(triggers=TriggerSettings(sqs_wait_seconds=0, **triggers))
    return SqsListener("https://sqs.test/queue", settings, submitter, sqs=sqs)  # type: ignore[arg-type]


def test_sqs_poll_submits_once_then_deletes_and_drops_garbage() -> None:
    photo = json.dumps(s3_event(s3_record("p.jpg")))
    sqs = FakeSqs([photo, photo, json.dumps(s3_test_event()), "not json at all"])
    submitter = RecordingSubmitter()
    stats = listener_for(sqs, submitter).poll_once()
    assert submitter.calls == [["s3://photos/p.jpg"]]  # the duplicate message adds nothing
    assert stats.submitted == 1 and stats.duplicates == 1 and stats.malformed == 1
    assert stats.job_id == "job-1"
    assert len(sqs.deleted) == 4  # photos after submit; TestEvent and garbage since done


def test_sqs_submit_failure_keeps_the_photo_messages_for_redelivery() -> None:
    photo = json.dumps(s3_event(s3_record("p.jpg")))
    sqs = FakeSqs([photo, "garbage", json.dumps(s3_test_event())])
    stats = listener_for(sqs, RecordingSubmitter(fail=True)).poll_once()
    assert stats.failed and stats.kept == 1
    assert len(sqs.deleted) == 2
    assert all(not handle.startswith('h-{"Records') for handle in sqs.deleted)


def test_sqs_slow_submit_extends_visibility() -> None:
    sqs = FakeSqs([json.dumps(s3_event(s3_record("slow.jpg")))])
    listener = listener_for(sqs, RecordingSubmitter(delay=1.5), sqs_visibility_timeout=2)
    listener.poll_once()
    assert sqs.visibility_calls, "visibility was not extended during a submit over half of it"
    assert sqs.deleted == sqs.visibility_calls[0]
    fast = FakeSqs([json.dumps(s3_event(s3_record("fast.jpg")))])
    listener_for(fast, RecordingSubmitter(), sqs_visibility_timeout=2).poll_once()
    assert fast.visibility_calls == []


def test_sqs_run_stops_when_asked_after_finishing_its_poll() -> None:
    photo = json.dumps(s3_event(s3_record("p.jpg")))
    sqs = FakeSqs([photo])
    stop = threading.Event()
    submitter = RecordingSubmitter()
    original = submitter.submit

    def submit_then_stop(refs: Iterable[str], *, force: bool = False) -> FakeJob:
        stop.set()  # a SIGTERM arriving mid-poll
        return original(refs)

    submitter.submit = submit_then_stop  # type: ignore[method-assign]
    totals = listener_for(sqs, submitter).run(stop)
    assert totals.submitted == 1 and len(sqs.deleted) == 1


def test_sqs_poison_message_is_deleted_and_the_good_ones_in_its_poll_submitted() -> None:
    poison = "[" * 50000 + "]" * 50000
    good = json.dumps(s3_event(s3_record("good.jpg")))
    sqs = FakeSqs([poison, good, "x" * 2_000_000])
    submitter = RecordingSubmitter()
    stats = listener_for(sqs, submitter).poll_once()
    assert submitter.calls == [["s3://photos/good.jpg"]]
    assert (stats.received, stats.malformed, stats.submitted, stats.deleted) == (3, 2, 1, 3)


class Boom(SubscriptionConfirmer):
    """A confirmer with a bug in it: not the ConfirmationFailed the listener expects."""

    def __init__(self) -> None:
        super().__init__(Settings())

    def confirm(self, request: Any) -> str | None:
        raise RuntimeError("a bug")


def test_sqs_unexpected_error_keeps_only_that_message(caplog: pytest.LogCaptureFixture) -> None:
    good = json.dumps(s3_event(s3_record("good.jpg")))
    sqs = FakeSqs([json.dumps(subscription_confirmation()), good])
    submitter = RecordingSubmitter()
    settings = Settings(triggers=TriggerSettings(sqs_wait_seconds=0))
    listener = SqsListener(
        "https://sqs.test/queue",
        settings,
        submitter,
        sqs=sqs,  # type: ignore[arg-type]
        confirmer=Boom(),
    )
    with caplog.at_level(logging.ERROR, "tagger.triggers.sqs"):
        stats = listener.poll_once()
    assert submitter.calls == [["s3://photos/good.jpg"]]
    assert (stats.kept, stats.submitted, stats.deleted) == (1, 1, 1)
    assert sqs.deleted == ["h-" + good[:20] + "-1"]
    [record] = [
        r for r in caplog.records if r.getMessage() == "sqs message failed; kept for redelivery"
    ]
    assert record.exc_info is not None and record.message_id == "m0"  # type: ignore[attr-defined]


def test_sqs_run_outlives_an_unexpected_error_in_a_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = listener_for(FakeSqs([]), RecordingSubmitter())
    stop = threading.Event()
    calls: list[int] = []

    def poll_once() -> PollStats:
        calls.append(1)
        if len(calls) == 1:
            raise RecursionError("whatever a bug raises")
        stop.set()
        return PollStats()

    monkeypatch.setattr(listener, "poll_once", poll_once)
    listener.run(stop)
    assert len(calls) == 2


# -- the queue's region, from its URL ----------------------------------------------------------


@pytest.fixture
def no_aws_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123/photo-events", "eu-west-1"),
        ("https://sqs-fips.us-gov-west-1.amazonaws.com/123/q", "us-gov-west-1"),
        ("https://ap-southeast-2.queue.amazonaws.com/123/q", "ap-southeast-2"),
        ("https://queue.amazonaws.com/123/q", "us-east-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123/q", "cn-north-1"),
        ("https://vpce-0a1b2c3d-e4f5.sqs.eu-central-1.vpce.amazonaws.com/123/q", "eu-central-1"),
        ("http://localhost:9324/000000000000/q", None),
        ("https://sqs.example.com/123/q", None),
        ("not a url", None),
    ],
)
def test_region_from_url(url: str, region: str | None) -> None:
    assert region_from_url(url) == region


def test_queue_region_prefers_the_url_then_settings_then_boto3(
    no_aws_region: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = "https://sqs.eu-west-1.amazonaws.com/123/photo-events"
    assert queue_region(aws, Settings()) == "eu-west-1"  # the README's case: no region set
    assert queue_region(aws, Settings(s3=S3Settings(region="us-west-2"))) == "eu-west-1"
    local = "http://localhost:9324/000000000000/q"
    override = Settings(triggers=TriggerSettings(sqs_endpoint_url="http://localhost:9324"))
    assert queue_region(local, override) == "us-east-1"
    configured = override.model_copy(update={"s3": S3Settings(region="eu-north-1")})
    assert queue_region(local, configured) == "eu-north-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    assert queue_region(local, override) == "sa-east-1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("photo-events", "not an SQS queue URL"),
        ("https://sqs.eu-west-1.amazonaws.com", "not an SQS queue URL"),
        ("ftp://sqs.eu-west-1.amazonaws.com/1/q", "not an SQS queue URL"),
        ("http://[::1/q", "not an SQS queue URL"),
        ("https://queues.example.com/1/q", "cannot tell the region"),
    ],
)
def test_queue_region_refuses_what_cannot_work(no_aws_region: None, url: str, message: str) -> None:
    with pytest.raises(QueueConfigError, match=message):
        queue_region(url, Settings())


def test_listener_built_for_the_readme_queue_url_without_any_region(no_aws_region: None) -> None:
    listener = SqsListener(
        "https://sqs.eu-west-1.amazonaws.com/123/photo-events", Settings(), RecordingSubmitter()
    )
    assert listener._sqs.meta.region_name == "eu-west-1"


# -- the webhook, on a real loopback socket ----------------------------------------------------


TOKEN = "s3cr3t-token"


@pytest.fixture
def webhook() -> Iterator[tuple[WebhookListener, RecordingSubmitter]]:
    settings = Settings(
        listener_token=SecretStr(TOKEN),
        triggers=TriggerSettings(http_max_body_bytes=4096, http_queue_size=4),
    )
    submitter = RecordingSubmitter()
    listener = WebhookListener(settings, submitter, host="127.0.0.1", port=0)
    with listener:
        yield listener, submitter


def post(
    listener: WebhookListener,
    body: bytes,
    authorization: str | None = f"Bearer {TOKEN}",
    path: str = "/events",
) -> tuple[int, dict[str, Any]]:
    host, port = listener.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read() or b"{}")
    finally:
        conn.close()


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_webhook_accepts_minio_payload_and_submits_asynchronously(
    webhook: tuple[WebhookListener, RecordingSubmitter],
) -> None:
    listener, submitter = webhook
    status, answer = post(listener, json.dumps(minio_payload("media", "new photo.jpg")).encode())
    assert status == 202 and answer["accepted"] == 1
    wait_for(lambda: submitter.calls == [["s3://media/new photo.jpg"]])


def test_webhook_refuses_missing_or_wrong_tokens_and_submits_nothing(
    webhook: tuple[WebhookListener, RecordingSubmitter],
) -> None:
    listener, submitter = webhook
    body = json.dumps(minio_payload("media", "x.jpg")).encode()
    for authorization in (None, "Bearer wrong", f"Token {TOKEN}", f"Bearer {TOKEN}x", "Basic !!"):
        status, answer = post(listener, body, authorization)
        assert status == 401, authorization
        assert answer == {"error": "unauthorized"}
    time.sleep(0.3)
    assert submitter.calls == []
    basic = base64.b64encode(f"sns:{TOKEN}".encode()).decode()
    assert post(listener, body, f"Basic {basic}")[0] == 202  # SNS sends URL credentials so
    wait_for(lambda: submitter.calls == [["s3://media/x.jpg"]])


def test_webhook_refuses_large_and_malformed_bodies(
    webhook: tuple[WebhookListener, RecordingSubmitter],
) -> None:
    listener, submitter = webhook
    status, answer = post(listener, b"{" + b" " * 5000 + b"}")
    assert status == 413 and answer["error"] == "too_large"
    status, answer = post(listener, b'{"Records": "nope"}')
    assert status == 400 and "Records: expected a list" in answer["reason"]
    status, answer = post(listener, json.dumps(s3_test_event()).encode())
    assert status == 200 and answer["skipped"] == 1
    assert post(listener, b"{}", path="/other")[0] == 404
    assert submitter.calls == []


def test_webhook_survives_a_poison_body_and_serves_the_next(
    webhook: tuple[WebhookListener, RecordingSubmitter],
) -> None:
    listener, submitter = webhook
    poison = b"[" * 2000 + b"]" * 2000  # under the 4096-byte bound, far too deep
    status, answer = post(listener, poison)
    assert status == 400 and answer["error"] == "malformed_event"
    assert "nested more than 64" in answer["reason"]
    status, answer = post(listener, b"{" * 4000)
    assert status == 400
    good = json.dumps(minio_payload("media", "after.jpg")).encode()
    assert post(listener, good)[0] == 202
    wait_for(lambda: submitter.calls == [["s3://media/after.jpg"]])


def test_webhook_access_log_never_shows_the_query_string(
    webhook: tuple[WebhookListener, RecordingSubmitter], caplog: pytest.LogCaptureFixture
) -> None:
    listener, submitter = webhook
    secret = "SECRET-query-token-0123456789"
    body = json.dumps(minio_payload("media", "q.jpg")).encode()
    with caplog.at_level(logging.DEBUG):
        assert post(listener, body, path=f"/events?token={secret}")[0] == 202
        assert post(listener, b"[" * 3000, path=f"/events?token={secret}")[0] == 400
        assert post(listener, body, None, path=f"/events?token={secret}")[0] == 401
        # a request line the base class refuses, quoting it in its own error line
        with socket.create_connection(listener.address, timeout=5) as raw:
            raw.sendall(f"GET /healthz?token={secret} HTTP/1.x\r\n\r\n".encode())
            assert b"400" in raw.makefile("rb").read()  # (as HTTP/0.9: a bare error page)
        wait_for(lambda: submitter.calls == [["s3://media/q.jpg"]])
    assert caplog.records
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in json.dumps(record.__dict__, default=str)
    requests = [r for r in caplog.records if r.getMessage() == "http request"]
    fields = [(r.method, r.path, r.status) for r in requests]  # type: ignore[attr-defined]
    assert ("POST", "/events", 202) in fields
    assert ("POST", "/events", 400) in fields
    assert ("POST", "/events", 401) in fields
    assert (None, "", 400) in fields  # refused before the path was parsed


def test_webhook_answers_503_when_its_queue_is_full() -> None:
    settings = Settings(
        listener_token=SecretStr(TOKEN), triggers=TriggerSettings(http_queue_size=1)
    )
    release = threading.Event()
    submitter = RecordingSubmitter()
    original = submitter.submit

    def blocked(refs: Iterable[str], *, force: bool = False) -> FakeJob:
        release.wait(10)
        return original(refs)

    submitter.submit = blocked  # type: ignore[method-assign]
    with WebhookListener(settings, submitter, host="127.0.0.1", port=0) as listener:
        statuses = []
        for n in range(4):
            statuses.append(post(listener, json.dumps(minio_payload("b", f"{n}.jpg")).encode())[0])
            time.sleep(0.3)  # let the submitter take the first one off the queue
        # the submitter holds one, the queue one more; the rest are told to come back later
        assert statuses == [202, 202, 503, 503]
        release.set()
    # stopping drained what had been accepted, and only that
    assert submitter.calls == [["s3://b/0.jpg"], ["s3://b/1.jpg"]]


def test_webhook_health_and_head(webhook: tuple[WebhookListener, RecordingSubmitter]) -> None:
    listener, _ = webhook
    conn = http.client.HTTPConnection(*listener.address, timeout=5)
    conn.request("GET", "/healthz")
    reply = conn.getresponse()
    assert reply.status == 200 and json.loads(reply.read()) == {"status": "ok", "pending": 0}
    conn.close()
    conn = http.client.HTTPConnection(*listener.address, timeout=5)
    conn.request("HEAD", "/events")
    assert conn.getresponse().status == 200
    conn.close()


def test_webhook_will_not_start_without_a_token() -> None:
    with pytest.raises(ValueError, match="TAGGER_LISTENER_TOKEN"):
        WebhookListener(Settings(), RecordingSubmitter(), port=0)


# -- SNS confirmation, through the SNS API (botocore Stubber), never the SubscribeURL ---------


def stubbed_confirmer(**triggers: Any) -> tuple[SubscriptionConfirmer, Stubber]:
    client = boto3.client(
        "sns", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    settings = Settings(triggers=TriggerSettings(**triggers))
    return SubscriptionConfirmer(settings, client), stubber


def test_confirmation_goes_to_the_sns_api_with_topic_and_token() -> None:
    confirmer, stubber = stubbed_confirmer()
    [request] = parse_notification(subscription_confirmation(), DEFAULTS).confirmations
    stubber.add_response(
        "confirm_subscription",
        {"SubscriptionArn": f"{TOPIC}:abcd"},
        {"TopicArn": TOPIC, "Token": request.token},
    )
    with stubber:
        assert confirmer.confirm(request) == f"{TOPIC}:abcd"
    stubber.assert_no_pending_responses()


def test_unlisted_topics_and_disabled_confirmation_call_nothing() -> None:
    [request] = parse_notification(subscription_confirmation(), DEFAULTS).confirmations
    for triggers in (
        {"topic_arns": ["arn:aws:sns:eu-west-1:1:other"]},
        {"confirm_subscriptions": False},
    ):
        confirmer, stubber = stubbed_confirmer(**triggers)
        with stubber:  # any call would fail: no response is queued
            assert confirmer.confirm(request) is None


def test_refused_confirmation_is_a_typed_failure() -> None:
    confirmer, stubber = stubbed_confirmer()
    [request] = parse_notification(subscription_confirmation(), DEFAULTS).confirmations
    stubber.add_client_error("confirm_subscription", "InvalidParameter", "bad token")
    with stubber, pytest.raises(ConfirmationFailed, match="bad token"):
        confirmer.confirm(request)
