"""Bucket notifications end to end, on real parts: the moto server's S3 notifies its own SQS and
SNS, ``tagger listen`` runs as a real process, a real Celery worker tags, PostgreSQL stores.
Hostile bodies (a 50 000-deep JSON array) go through the same real processes: the listeners
must drop them and live on, and the webhook's log must never show a query-string token."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import boto3
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from tagger.client import TaggerClient
from tagger.config import Settings, TriggerSettings
from tagger.schemas import Status
from tagger.triggers.aws_lambda import lambda_handler
from tagger.triggers.parser import SubscriptionConfirmation
from tagger.triggers.sns import ConfirmationFailed, SubscriptionConfirmer
from tagger.triggers.sqs import SqsListener
from tests.integration.services import CeleryWorker, free_port, settings_env

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

TOKEN = "integration-listener-token"
DATA = Path(__file__).parent / "data"
JOB_ID = r'"job_id": "([0-9a-f]{32})"'  # a field of the listener's JSON log lines
POISON = "[" * 50000 + "]" * 50000  # RecursionError in json.loads, before the bounds


@pytest.fixture(scope="module")
def cat_jpeg() -> bytes:
    from skimage import data as skdata

    buffer = io.BytesIO()
    pixels = np.asarray(skdata.chelsea())  # type: ignore[no-untyped-call]
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def settings(service_settings: Settings, moto_server: str) -> Settings:
    """The service's settings with the listeners pointed at the moto server's SQS and SNS."""
    return service_settings.model_copy(
        update={
            "triggers": TriggerSettings(
                sqs_endpoint_url=moto_server,
                sns_endpoint_url=moto_server,
                sqs_wait_seconds=1,
                sqs_visibility_timeout=30,
            ),
            "listener_token": SecretStr(TOKEN),
        }
    )


@pytest.fixture
def sqs(moto_server: str, aws_credentials: None) -> Iterator[SQSClient]:
    client = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def sns(moto_server: str, aws_credentials: None) -> Iterator[SNSClient]:
    client = boto3.client("sns", endpoint_url=moto_server, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def bucket(moto_s3: S3Client) -> str:
    name = f"uploads-{uuid.uuid4().hex[:12]}"
    moto_s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def queue_url(sqs: SQSClient) -> str:
    return sqs.create_queue(QueueName=f"notify-{uuid.uuid4().hex[:12]}")["QueueUrl"]


class Listener:
    """``python -m tagger.cli.listen …`` as its own process, configured by TAGGER_* env."""

    def __init__(self, settings: Settings, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tagger.cli.listen", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        log.close()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60.0, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.log)
            if len(found) >= count:
                return found
            assert self.process.poll() is None, f"listener exited:\n{self.log[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in time:\n{self.log[-3000:]}"
            time.sleep(0.2)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a container stop sends it; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def start_listener(tmp_path: Path) -> Iterator[Callable[[Settings, list[str]], Listener]]:
    started: list[Listener] = []

    def start(settings: Settings, args: list[str]) -> Listener:
        listener = Listener(settings, args, tmp_path / f"listener-{len(started)}.log")
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def wait_until_tagged(client: TaggerClient, ref: str, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = client.tags(ref)
        if result is not None and result.status is Status.TAGGED:
            return result
        assert result is None or result.status is not Status.FAILED, result.reason
        assert time.monotonic() < deadline, f"{ref} not tagged within {timeout}s"
        time.sleep(0.5)


def messages_left(sqs: SQSClient, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def s3_event(bucket: str, key: str, etag: str) -> str:
    """The record S3 sends for a PUT, as moto sends it (key URL-encoded)."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "dup",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key), "size": 1, "eTag": etag},
        },
    }
    return json.dumps({"Records": [record]})


# -- S3 → SQS → tagger listen sqs → worker → store ---------------------------------------------


def test_s3_notifications_through_sqs_are_tagged_once_and_sigterm_exits_cleanly(
    settings: Settings,
    moto_s3: S3Client,
    sqs: SQSClient,
    bucket: str,
    queue_url: str,
    cat_jpeg: bytes,
    start_worker: Callable[..., CeleryWorker],
    start_listener: Callable[[Settings, list[str]], Listener],
) -> None:
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    moto_s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )  # S3 (and moto) answer with an s3:TestEvent in the queue
    sqs.send_message(QueueUrl=queue_url, MessageBody="garbage, not an S3 event {")
    start_worker(settings)
    listener = start_listener(settings, ["sqs", queue_url])

    key = "trips/my photo(1).jpg"
    put = moto_s3.put_object(Bucket=bucket, Key=key, Body=cat_jpeg)
    moto_s3.put_object(Bucket=bucket, Key="trips/notes.txt", Body=b"not a photo")
    ref = f"s3://{bucket}/{key}"
    with TaggerClient(settings) as client:
        first = wait_until_tagged(client, ref)
        assert "cat" in first.tag_names()
        assert first.etag == put["ETag"].strip('"')
        assert "malformed message deleted" in listener.log
        deadline = time.monotonic() + 30
        while messages_left(sqs, queue_url):  # photo, text file, TestEvent and garbage: all gone
            assert time.monotonic() < deadline, "messages left in the queue"
            time.sleep(0.5)

        # S3 delivers at least once: the same event again costs no inference
        sqs.send_message(QueueUrl=queue_url, MessageBody=s3_event(bucket, key, first.etag))
        jobs = listener.wait_for_log(JOB_ID, count=2)
        counts = client.job(jobs[1]).wait(timeout=120)
        assert (counts.total, counts.skipped, counts.done) == (1, 1, 0)
        again = client.tags(ref)
        assert again is not None and again.tagged_at == first.tagged_at
        assert client.store.counts()["tagged"] == 1

    assert listener.process.poll() is None, "the garbage message stopped the listener"
    assert listener.terminate() == 0, listener.log[-3000:]
    assert "sqs listener stopped" in listener.log


def test_a_poison_message_is_deleted_and_the_good_one_beside_it_submitted(
    settings: Settings,
    sqs: SQSClient,
    queue_url: str,
    bucket: str,
    start_listener: Callable[[Settings, list[str]], Listener],
) -> None:
    """The measured failure: a 50 000-deep JSON body made ``tagger listen sqs`` exit on every
    restart, losing the good message received with it. No worker here: what counts is that
    the photo is submitted (its job in the store, its task in the broker) and the listener
    lives on."""
    sqs.send_message(QueueUrl=queue_url, MessageBody=POISON)
    sqs.send_message(QueueUrl=queue_url, MessageBody=s3_event(bucket, "after/poison.jpg", "e1"))
    listener = start_listener(settings, ["sqs", queue_url])
    [job_id] = listener.wait_for_log(JOB_ID)
    listener.wait_for_log(r'"message": "malformed message deleted"')
    assert "JSON nested more than 64 deep" in listener.log
    with TaggerClient(settings) as client:
        assert client.job(job_id).status().total == 1
        assert client.queue_depth() == 1
    deadline = time.monotonic() + 30
    while messages_left(sqs, queue_url):  # the poison deleted too, not left to come back
        assert time.monotonic() < deadline, "messages left in the queue"
        time.sleep(0.5)
    malformed = sum(int(n) for n in re.findall(r'"malformed": (\d+)', listener.log))
    assert malformed == 1
    sqs.send_message(QueueUrl=queue_url, MessageBody=s3_event(bucket, "after/next.jpg", "e2"))
    listener.wait_for_log(JOB_ID, count=2)  # still polling
    assert "Traceback" not in listener.log and "RecursionError" not in listener.log
    assert listener.terminate() == 0, listener.log[-3000:]


def test_the_listener_finds_the_region_in_the_queue_url(
    settings: Settings, moto_server: str, tmp_path: Path
) -> None:
    """The README's command with no region anywhere: no NoRegionError traceback. With no
    credentials either, it gets as far as asking SQS, and says so in one line."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "TAGGER_")) and key != "HOME"
    }
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"))
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    env.update(AWS_EC2_METADATA_DISABLED="true")
    env.update({k: v for k, v in settings_env(settings).items() if "TRIGGERS" not in k})
    url = "https://sqs.eu-west-1.amazonaws.com/123/photo-events"
    done = subprocess.run(
        [sys.executable, "-m", "tagger.cli.listen", "sqs", url, "--wait", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "NoRegionError" not in done.stderr
    assert "cannot use queue" in done.stderr and "credentials" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "tagger.cli.listen", "sqs", "photo-events"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "not an SQS queue URL" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_slow_submit_keeps_its_messages_hidden_until_deleted(
    settings: Settings, sqs: SQSClient, queue_url: str
) -> None:
    """Visibility 2 s, a submit of 5 s: without the extension SQS would hand the message out
    again mid-submit."""
    sqs.send_message(QueueUrl=queue_url, MessageBody=s3_event("b", "slow.jpg", "e1"))
    submitted: list[list[str]] = []

    class SlowSubmitter:
        def submit(self, refs: Iterable[str], *, force: bool = False) -> Any:
            time.sleep(5)
            submitted.append([str(ref) for ref in refs])
            return type("Job", (), {"id": "slow", "total": 1})()

        def queue_depth(self) -> int:
            return 0

    quick = settings.model_copy(
        update={
            "triggers": settings.triggers.model_copy(
                update={"sqs_visibility_timeout": 2, "sqs_wait_seconds": 0}
            )
        }
    )
    listener = SqsListener(queue_url, quick, SlowSubmitter(), sqs=sqs)
    polled: list[Any] = []
    thread = threading.Thread(target=lambda: polled.append(listener.poll_once()))
    thread.start()
    seen_meanwhile = []
    for _ in range(4):
        time.sleep(1)
        reply = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0, VisibilityTimeout=0)
        seen_meanwhile.extend(reply.get("Messages", []))
    thread.join(30)
    assert submitted == [["s3://b/slow.jpg"]]
    assert seen_meanwhile == []
    assert polled[0].deleted == 1
    assert messages_left(sqs, queue_url) == 0


# -- webhooks: MinIO's payload, and moto's SNS delivering S3 events over HTTP --------------------


def post_events(
    port: int, body: bytes, authorization: str | None, path: str = "/events"
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_for_health(port: int, listener: Listener, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        assert listener.process.poll() is None, f"listener exited:\n{listener.log[-3000:]}"
        assert time.monotonic() < deadline, f"webhook not healthy:\n{listener.log[-3000:]}"
        time.sleep(0.2)


def minio_payload(bucket: str, key: str, etag: str) -> bytes:
    record = json.loads(s3_event(bucket, key, etag))["Records"][0]
    record.update(eventSource="minio:s3", eventName="s3:ObjectCreated:Put", eventVersion="2.0")
    return json.dumps(
        {"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}", "Records": [record]}
    ).encode()


def test_webhook_tags_minio_and_sns_deliveries(
    settings: Settings,
    moto_s3: S3Client,
    sns: SNSClient,
    bucket: str,
    cat_jpeg: bytes,
    start_worker: Callable[..., CeleryWorker],
    start_listener: Callable[[Settings, list[str]], Listener],
) -> None:
    port = free_port()
    listener = start_listener(settings, ["http", "--port", str(port)])
    start_worker(settings)
    wait_for_health(port, listener)

    put = moto_s3.put_object(Bucket=bucket, Key="minio/cat.jpg", Body=cat_jpeg)
    body = minio_payload(bucket, "minio/cat.jpg", put["ETag"].strip('"'))
    status, answer = post_events(port, body, f"Bearer {TOKEN}")
    assert (status, answer["accepted"]) == (202, 1)

    # S3 → SNS topic → HTTP subscription with the token as Basic-auth password (all moto)
    topic = sns.create_topic(Name=f"uploads-{uuid.uuid4().hex[:8]}")["TopicArn"]
    sns.subscribe(
        TopicArn=topic, Protocol="http", Endpoint=f"http://sns:{TOKEN}@127.0.0.1:{port}/events"
    )
    moto_s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "TopicConfigurations": [
                {
                    "TopicArn": topic,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "sns/"}]}},
                }
            ]
        },
    )
    moto_s3.put_object(Bucket=bucket, Key="sns/cat copy.jpg", Body=cat_jpeg)

    with TaggerClient(settings) as client:
        assert "cat" in wait_until_tagged(client, f"s3://{bucket}/minio/cat.jpg").tag_names()
        assert "cat" in wait_until_tagged(client, f"s3://{bucket}/sns/cat copy.jpg").tag_names()
    assert listener.terminate() == 0, listener.log[-3000:]


def test_webhook_without_the_token_submits_nothing(
    settings: Settings,
    bucket: str,
    start_listener: Callable[[Settings, list[str]], Listener],
) -> None:
    port = free_port()
    listener = start_listener(settings, ["http", "--port", str(port)])
    wait_for_health(port, listener)
    body = minio_payload(bucket, "x.jpg", "etag")
    with TaggerClient(settings) as client:  # no worker: whatever is submitted stays queued
        for authorization in (None, "Bearer not-the-token", f"Basic {TOKEN}"):
            status, answer = post_events(port, body, authorization)
            assert (status, answer) == (401, {"error": "unauthorized"}), authorization
        time.sleep(1.0)
        assert client.queue_depth() == 0
        assert post_events(port, body, f"Bearer {TOKEN}")[0] == 202
        deadline = time.monotonic() + 30
        while client.queue_depth() == 0:
            assert time.monotonic() < deadline, "the accepted notification was not submitted"
            time.sleep(0.2)
    assert listener.terminate() == 0


def test_webhook_refuses_a_poison_body_keeps_serving_and_logs_no_query_string(
    settings: Settings,
    bucket: str,
    start_listener: Callable[[Settings, list[str]], Listener],
) -> None:
    port = free_port()
    listener = start_listener(settings, ["http", "--port", str(port)])
    wait_for_health(port, listener)
    secret = f"SECRET-{uuid.uuid4().hex}"
    path = f"/events?token={secret}"
    status, answer = post_events(port, POISON.encode(), f"Bearer {TOKEN}", path)
    assert status == 400 and answer["error"] == "malformed_event"
    assert post_events(port, b"{}", None, path)[0] == 401
    body = minio_payload(bucket, "after-poison.jpg", "etag")
    status, answer = post_events(port, body, f"Bearer {TOKEN}", path)
    assert (status, answer["accepted"]) == (202, 1)
    with TaggerClient(settings) as client:  # no worker: the submitted task waits in the broker
        deadline = time.monotonic() + 30
        while client.queue_depth() == 0:
            assert time.monotonic() < deadline, "the accepted notification was not submitted"
            time.sleep(0.2)
    listener.wait_for_log(JOB_ID)
    assert listener.terminate() == 0, listener.log[-3000:]
    log = listener.log
    assert secret not in log and "token=" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["message"] == "http request"]
    assert {(r["method"], r["path"], r["status"]) for r in requests} >= {
        ("POST", "/events", 400),
        ("POST", "/events", 401),
        ("POST", "/events", 202),
    }


# -- Lambda ------------------------------------------------------------------------------------


def test_lambda_handler_submits_a_recorded_s3_event(
    settings: Settings,
    moto_s3: S3Client,
    bucket: str,
    cat_jpeg: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in settings_env(settings).items():  # Lambda configures through its env
        monkeypatch.setenv(name, value)
    moto_s3.put_object(Bucket=bucket, Key="uploads/my photo(1).jpg", Body=cat_jpeg)
    recorded = json.loads((DATA / "s3_put_event.json").read_text())
    recorded["Records"][0]["s3"]["bucket"]["name"] = bucket
    ref = f"s3://{bucket}/uploads/my photo(1).jpg"

    summary = lambda_handler(recorded, None)
    assert summary["refs"] == [ref] and summary["submitted"] == 1
    with TaggerClient(settings) as client:
        assert client.job(summary["job_id"]).status().total == 1
        assert client.queue_depth() == 1

    from_sqs = {
        "Records": [
            {"messageId": "1", "eventSource": "aws:sqs", "body": json.dumps(recorded)},
            {"messageId": "2", "eventSource": "aws:sqs", "body": "{oops"},
            {"messageId": "3", "eventSource": "aws:sqs", "body": json.dumps(recorded)},
            {"messageId": "4", "eventSource": "aws:sqs", "body": POISON},
        ]
    }
    summary = lambda_handler(from_sqs, None)
    assert (summary["submitted"], summary["duplicates"], len(summary["malformed"])) == (1, 1, 2)
    assert summary["batchItemFailures"] == []  # malformed records are dropped, not retried

    # the store unreachable: exactly the records that carried photos come back
    monkeypatch.setenv("TAGGER_STORE__URL", "sqlite:////proc/no-such-dir/tags.db")
    summary = lambda_handler(from_sqs, None)
    assert summary["batchItemFailures"] == [{"itemIdentifier": "1"}, {"itemIdentifier": "3"}]
    assert summary["job_id"] is None

    # a direct invocation with a poison SNS message: reported, not a RecursionError
    from_sns = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "Sns": {
                    "Type": "Notification",
                    "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                    "Message": POISON,
                },
            }
        ]
    }
    summary = lambda_handler(from_sns, None)
    assert summary["submitted"] == 0 and len(summary["malformed"]) == 1


# -- SNS confirmation against moto's SNS API ----------------------------------------------------


def test_subscription_confirmation_reaches_the_sns_api(settings: Settings, sns: SNSClient) -> None:
    topic = sns.create_topic(Name=f"confirm-{uuid.uuid4().hex[:8]}")["TopicArn"]
    confirmer = SubscriptionConfirmer(settings)
    assert confirmer.confirm(SubscriptionConfirmation(topic_arn=topic, token="t" * 64))
    missing = topic + "-gone"
    with pytest.raises(ConfirmationFailed, match="Topic does not exist"):
        confirmer.confirm(SubscriptionConfirmation(topic_arn=missing, token="t" * 64))
