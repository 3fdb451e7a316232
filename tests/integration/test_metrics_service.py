"""/metrics of the real service: a ``tagger worker`` (main process + prefork children, sharing
metric files) on a private redis-server, tagging photos from the moto server into PostgreSQL;
the webhook listener as its own process; kombu's visibility sweep against real Redis.
Everything on loopback; every endpoint scraped over HTTP, as Prometheus does."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from kombu.connection import Connection
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tagger.client import TaggerClient
from tagger.config import MetricsSettings, Settings
from tagger.schemas import Status
from tests.integration.services import CeleryWorker, free_port
from tests.integration.test_service import photo
from tests.integration.test_triggers import Listener, s3_event
from workers.broker import TRANSPORT

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for have, value in samples.get(name, [])
        if all(have.get(key) == want for key, want in labels.items())
    )


def scrape_until(port: int, done: Callable[[Samples], bool], timeout: float = 30.0) -> Samples:
    """Counters are written just after the store is, so a finished job may be a moment ahead
    of its counts; scrape until they catch up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            samples = scrape(port)
        except (urllib.error.URLError, OSError):
            samples = {}
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.5)


def with_metrics(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "metrics": MetricsSettings(
                host="127.0.0.1",
                port=free_port(),
                listener_port=free_port(),
                multiproc_dir=tmp_path / "metrics",
            )
        }
    )


def test_worker_metrics_add_up_to_the_jobs_counts(
    service_settings: Settings,
    moto_s3: S3Client,
    start_worker: Callable[..., CeleryWorker],
    sample_photos: dict[str, bytes],
    tmp_path: Path,
) -> None:
    settings = with_metrics(service_settings, tmp_path)
    bucket = f"metrics-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(Bucket=bucket)
    bodies = {f"good-{i}.jpg": photo(i) for i in range(4)}
    bodies["broken.jpg"] = sample_photos["chelsea"][:300]  # corrupt bytes
    bodies["page.jpg"] = b"<!doctype html><html></html>"
    for key, body in bodies.items():
        moto_s3.put_object(Bucket=bucket, Key=key, Body=body)
    good = [f"s3://{bucket}/good-{i}.jpg" for i in range(4)]
    bad = [f"s3://{bucket}/{key}" for key in ("broken.jpg", "page.jpg", "missing.jpg")]

    worker = start_worker(settings, concurrency=2)
    port = settings.metrics.port
    with TaggerClient(settings) as client:
        first = client.submit(good + bad).wait(timeout=180)
        again = client.submit(good).wait(timeout=120)
        assert (first.done, first.failed, first.skipped) == (4, 3, 0)
        assert (again.done, again.failed, again.skipped) == (0, 0, 4)
        errors = Counter(str(result.error) for result in client.failures())
        tagged = client.tags(good[0])
    assert tagged is not None and tagged.status is Status.TAGGED
    assert sum(errors.values()) == 3 and errors["not_found"] == 1

    expected = {"tagged": 4.0, "failed": 3.0, "skipped": 4.0}
    samples = scrape_until(
        port,
        lambda s: (
            {status: total(s, "tagger_photos_total", status=status) for status in expected}
            == expected
        ),
    )
    by_status = {
        status: total(samples, "tagger_photos_total", status=status) for status in expected
    }
    assert by_status == expected, samples.get("tagger_photos_total")
    assert by_status["tagged"] == first.done
    assert by_status["failed"] == first.failed + again.failed
    assert by_status["skipped"] == first.skipped + again.skipped
    by_error = {
        labels["error"]: value
        for labels, value in samples["tagger_photos_total"]
        if labels["status"] == "failed"
    }
    assert by_error == {code: float(count) for code, count in errors.items()}
    assert {
        labels["error"]
        for labels, _ in samples["tagger_photos_total"]
        if labels["status"] != "failed"
    } == {"none"}

    # what else a worker reports, aggregated over its children by the main process
    assert total(samples, "tagger_task_seconds_count", outcome="done") >= 2
    assert total(samples, "tagger_inference_batch_seconds_count") >= 1
    for name in tagged.analyzers:
        assert total(samples, "tagger_analyzer_seconds_count", analyzer=name) >= 1, name
    versions = {labels["name"]: labels["version"] for labels, _ in samples["tagger_analyzer_info"]}
    assert versions == {name: run.version for name, run in tagged.analyzers.items()}
    read = sum(len(body) for key, body in bodies.items() if key != "missing.jpg")
    assert total(samples, "tagger_fetched_bytes_total", source="s3") >= read
    assert samples["tagger_queue_depth"] == [({"queue": settings.worker.queue}, 0.0)]
    assert total(samples, "tagger_task_retries_total") == 0

    # every process wrote its own files in the worker's own folder, which the main one merges
    assert worker.process is not None
    folder = settings.metrics.multiproc_dir / str(worker.process.pid)
    writers = {path.stem.rsplit("_", 1)[1] for path in folder.glob("*.db")}
    assert len(writers) >= 2, sorted(path.name for path in folder.iterdir())


def test_webhook_listener_counts_what_it_receives_refuses_and_submits(
    service_settings: Settings, tmp_path: Path
) -> None:
    token = "metrics-listener-token"
    settings = with_metrics(service_settings, tmp_path).model_copy(
        update={"listener_token": SecretStr(token)}
    )
    port = free_port()
    listener = Listener(settings, ["http", "--port", str(port)], tmp_path / "listener.log")
    try:
        check_listener(listener, port, token, settings.metrics.listener_port)
    finally:
        listener.stop()


def check_listener(listener: Listener, port: int, token: str, metrics_port: int) -> None:
    listener.wait_for_log("webhook listening")
    listener.wait_for_log("metrics endpoint listening")

    def post(body: bytes) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/events",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as refused:
            return int(refused.code)

    assert post(s3_event("uploads", "2026/cat one.jpg", "etag-1").encode()) == 202
    assert post(json.dumps({"Records": [{"eventSource": "aws:s3"}]})[:-3].encode()) == 400
    assert post(s3_event("uploads", "2026/dog.jpg", "etag-2").encode()) == 202

    want = {"received": 3.0, "malformed": 1.0, "submitted": 2.0}

    def counts(samples: Samples) -> dict[str, float]:
        return {
            "received": total(samples, "tagger_listener_events_received_total", listener="webhook"),
            "malformed": total(
                samples, "tagger_listener_events_malformed_total", listener="webhook"
            ),
            "submitted": total(
                samples, "tagger_listener_photos_submitted_total", listener="webhook"
            ),
        }

    samples = scrape_until(metrics_port, lambda s: counts(s) == want)
    assert counts(samples) == want, listener.log[-3000:]
    assert total(samples, "tagger_listener_submit_failures_total") == 0
    assert "process_cpu_seconds_total" in samples, "a listener is one process: default registry"


def test_the_visibility_sweep_counts_the_batches_it_requeues(redis_server: str) -> None:
    """The reconciler of a dead worker's batch is kombu's sweep of unacked messages, run by
    the workers' transport (workers/broker.py); each message it restores is counted."""

    def requeued() -> float:
        return (
            REGISTRY.get_sample_value("tagger_requeues_total", {"reason": "visibility_timeout"})
            or 0.0
        )

    name = f"requeue-{uuid.uuid4().hex[:8]}"
    options = {"visibility_timeout": 1}
    url = f"{redis_server}/0"
    waiting = redis.Redis.from_url(url)  # the queue's list, which an empty queue does not have
    with Connection(url, transport=TRANSPORT, transport_options=options) as conn:  # type: ignore[no-untyped-call]
        queue = conn.SimpleQueue(name)
        queue.put({"batch": 1})
        held = queue.get(timeout=5)  # delivered, never acked: a worker that died with it
        assert held.payload == {"batch": 1} and waiting.llen(name) == 0
        before = requeued()
        time.sleep(1.5)
        queue.channel.qos.restore_visible(num=10)
        assert waiting.llen(name) == 1, "the batch is back in the queue"
        assert requeued() == before + 1
        queue.get(timeout=5).ack()
        queue.close()
    waiting.close()
