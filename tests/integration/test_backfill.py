"""The backfill against real parts: a moto S3 server, a private redis-server, PostgreSQL, the
``tagger backfill`` command in its own process, and a real Celery worker where tagging must
actually happen.

Submissions are counted where they land: with no worker running, every task the backfill sent
is still a message in the Redis list of the test's queue, and its body names its refs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import redis
from PIL import Image

from tagger.backfill import (
    BackfillOptions,
    BackfillSummary,
    LockHeld,
    LockLost,
    Target,
    current_versions,
    hold_lock,
    run_backfill,
)
from tagger.client import TaggerClient
from tagger.config import BackfillSettings, Settings
from tagger.queueing import BACKFILL_TASK, make_celery
from tagger.schemas import AnalyzerRun, Status, TagResult, combined_version
from tagger.store import SqlTagStore
from tests.integration.services import CeleryWorker, settings_env
from workers.backfill_task import register_backfill_task

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

PREFIX = "camera/"
CLI = (
    "import typer\n"
    "from tagger.cli.backfill import register\n"
    "app = typer.Typer()\n"
    "register(app)\n"
    "app()\n"
)


def tiny_jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def upload(s3: S3Client, bucket: str, count: int) -> dict[str, str]:
    """``count`` distinct photos (and two objects that are not photos); ref → ETag."""
    s3.create_bucket(Bucket=bucket)
    keys = [f"{PREFIX}{i:05d}.jpg" for i in range(count)]

    def put(index: int) -> str:
        reply = s3.put_object(Bucket=bucket, Key=keys[index], Body=tiny_jpeg(index))
        return reply["ETag"].strip('"')

    with ThreadPoolExecutor(8) as pool:
        etags = list(pool.map(put, range(count)))
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}index.html", Body=b"<html></html>")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}thumbs/", Body=b"")
    return {f"s3://{bucket}/{key}": etag for key, etag in zip(keys, etags, strict=True)}


def queued_refs(settings: Settings) -> list[str]:
    """Refs of every task waiting in the test's queue, in queue order, repeats kept."""
    client = redis.Redis.from_url(settings.worker.broker_url)
    try:
        refs: list[str] = []
        for raw in client.lrange(settings.worker.queue, 0, -1):
            _args, kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
            refs.extend(kwargs["refs"])
        return refs
    finally:
        client.close()


def tagged(refs: dict[str, str], versions: dict[str, str]) -> list[TagResult]:
    return [
        TagResult(
            ref=ref,
            status=Status.TAGGED,
            etag=etag,
            model_version=combined_version(versions),
            analyzers={name: AnalyzerRun(version=v) for name, v in versions.items()},
        )
        for ref, etag in refs.items()
    ]


@pytest.fixture
def settings(service_settings: Settings) -> Settings:
    """Small pages and chunks so 1,000 photos take several of each; a short lock timeout so a
    killed run frees its prefix within seconds."""
    backfill = BackfillSettings(
        page_size=200, chunk_size=50, max_queue_depth=10_000, poll_interval=0.05, lock_timeout=3
    )
    return service_settings.model_copy(update={"backfill": backfill})


@pytest.fixture
def store(settings: Settings) -> Iterator[SqlTagStore]:
    with SqlTagStore.from_settings(settings) as opened:
        yield opened


def backfill(settings: Settings, target: Target, **options: Any) -> BackfillSummary:
    """One run as the CLI and the task do it: under the lock, submitting through the client."""
    with TaggerClient(settings) as client, hold_lock(settings, target) as lease:
        return run_backfill(
            settings, target, client.store, client, BackfillOptions(**options), lease=lease
        )


def test_only_untagged_photos_are_submitted_and_once_tagged_nothing_is(
    settings: Settings,
    moto_s3: S3Client,
    store: SqlTagStore,
    start_worker: Callable[..., CeleryWorker],
) -> None:
    refs = upload(moto_s3, "backfill-once", 1000)
    version = current_versions(settings)
    done = dict(list(refs.items())[::10] + list(refs.items())[1::10] + list(refs.items())[2::10])
    store.save(tagged(done, version))
    target = Target.parse(f"s3://backfill-once/{PREFIX}")

    summary = backfill(settings, target)

    assert (summary.listed, summary.submitted, summary.current) == (1000, 700, 300)
    assert summary.other_objects == 2 and summary.completed
    queued = queued_refs(settings)
    assert sorted(queued) == sorted(set(refs) - set(done))
    assert store.get_cursor(target.cursor_name) is None

    start_worker(settings, concurrency=2)
    deadline = time.monotonic() + 600
    while store.counts()["tagged"] < 1000 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.counts() == {"tagged": 1000, "failed": 0, "skipped": 0}

    again = backfill(settings, target)
    assert (again.listed, again.submitted, again.current) == (1000, 0, 1000)


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "backfill", *args],
        env={**os.environ, **settings_env(settings), **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_paused(process: subprocess.Popen[str], store: SqlTagStore, name: str) -> str:
    """The run's cursor, once it has stopped moving for a second: the run is then held up by
    the queue bound, waiting for room."""
    deadline = time.monotonic() + 120
    seen, since = None, time.monotonic()
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        cursor = store.get_cursor(name)
        if cursor != seen:
            seen, since = cursor, time.monotonic()
        elif cursor is not None and time.monotonic() - since > 1.0:
            return cursor
        time.sleep(0.1)
    raise AssertionError(f"the backfill did not pause; cursor {seen!r}")


def test_a_killed_backfill_resumes_and_submits_each_photo_once(
    settings: Settings, moto_s3: S3Client, store: SqlTagStore
) -> None:
    refs = upload(moto_s3, "backfill-killed", 1000)
    target = Target.parse(f"s3://backfill-killed/{PREFIX}")
    # 50 photos are 4 tasks of 16: after two chunks the queue is over 8 - 4 and, with no
    # worker, the run waits for room for good: a stable, known place to kill it.
    paced = {"TAGGER_BACKFILL__MAX_QUEUE_DEPTH": "8"}
    first = _cli(settings, target.uri, **paced)
    second: subprocess.Popen[str] | None = None
    try:
        cursor = wait_until_paused(first, store, target.cursor_name)

        second = _cli(settings, target.uri)
        started = time.monotonic()
        _out, err = second.communicate(timeout=60)
        assert second.returncode == 3
        assert f"another backfill holds the lock for {target.uri}" in " ".join(err.split())
        assert time.monotonic() - started < 30

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    before_restart = queued_refs(settings)
    assert len(before_restart) == 100 and max(before_restart) == f"s3://backfill-killed/{cursor}"

    locks = redis.Redis.from_url(settings.worker.broker_url)
    deadline = time.monotonic() + 30
    while locks.exists(target.lock_name) and time.monotonic() < deadline:
        time.sleep(0.1)  # the dead run's lock expires after lock_timeout
    locks.close()
    third = _cli(settings, target.uri, "--json")
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    summary = BackfillSummary.model_validate_json(out.strip().splitlines()[-1])
    assert summary.resumed_after == cursor and summary.completed
    assert summary.submitted == 900

    submissions = Counter(queued_refs(settings))
    assert set(submissions) == set(refs)
    assert max(submissions.values()) == 1
    assert store.get_cursor(target.cursor_name) is None


def test_retag_outdated_submits_what_an_older_model_tagged(
    settings: Settings, moto_s3: S3Client, store: SqlTagStore
) -> None:
    refs = upload(moto_s3, "backfill-outdated", 1000)
    store.save(tagged(refs, {"classify": "0123456789abcdef"}))  # an older model's version
    target = Target.parse(f"s3://backfill-outdated/{PREFIX}")

    kept = backfill(settings, target)
    assert (kept.submitted, kept.outdated, kept.skipped) == (0, 1000, 1000)
    assert queued_refs(settings) == []

    retag = backfill(settings, target, retag_outdated=True)
    assert (retag.submitted, retag.outdated) == (1000, 1000)
    assert sorted(queued_refs(settings)) == sorted(refs)


def test_the_queue_bound_is_never_exceeded_by_more_than_one_chunk(
    settings: Settings, moto_s3: S3Client, store: SqlTagStore
) -> None:
    refs = upload(moto_s3, "backfill-paced", 1000)
    bound, chunk_tasks = 100, 25  # chunks of 50 photos in tasks of 2
    paced = settings.model_copy(
        update={
            "worker": settings.worker.model_copy(update={"batch_size": 2}),
            "backfill": settings.backfill.model_copy(update={"max_queue_depth": bound}),
        }
    )
    queue = paced.worker.queue
    target = Target.parse(f"s3://backfill-paced/{PREFIX}")
    client = redis.Redis.from_url(paced.worker.broker_url)
    depths: list[int] = []
    consumed: list[str] = []
    finished = threading.Event()

    def sample() -> None:
        while not finished.is_set():
            depths.append(int(client.llen(queue)))
            time.sleep(0.002)

    def slow_consumer() -> None:
        """Starts once the backfill is held up, then takes a few tasks at a time."""
        while client.llen(queue) <= bound - chunk_tasks and not finished.is_set():
            time.sleep(0.01)
        time.sleep(0.5)
        while not finished.is_set() or client.llen(queue):
            for raw in client.rpop(queue, 5) or []:
                body = json.loads(raw)["body"]  # type: ignore[arg-type]
                _args, kwargs, _embed = json.loads(base64.b64decode(body))
                consumed.extend(kwargs["refs"])
            time.sleep(0.02)

    threads = [threading.Thread(target=sample), threading.Thread(target=slow_consumer)]
    for thread in threads:
        thread.start()
    try:
        summary = backfill(paced, target)
    finally:
        finished.set()
        for thread in threads:
            thread.join(timeout=60)
        client.close()

    # 500 tasks went through a queue never holding much more than 100: the run waited
    assert summary.submitted == 1000 and summary.waited_seconds > 0
    assert max(depths) <= bound + chunk_tasks
    assert max(depths) >= bound - chunk_tasks  # the bound was actually reached
    assert sorted(consumed) == sorted(refs)


def test_the_nightly_task_backfills_under_the_same_lock(
    settings: Settings, moto_s3: S3Client
) -> None:
    refs = upload(moto_s3, "backfill-nightly", 40)
    target = Target.parse(f"s3://backfill-nightly/{PREFIX}")
    app = make_celery(settings, name="test-backfill-task")
    register_backfill_task(app, settings)
    task = app.tasks[BACKFILL_TASK]

    with hold_lock(settings, target):
        assert task(target=target.uri) == {"target": target.uri, "locked": True}
    assert queued_refs(settings) == []

    result = task(target=target.uri)
    assert (result["submitted"], result["completed"]) == (40, True)
    assert sorted(queued_refs(settings)) == sorted(refs)


def test_the_lock_is_renewed_while_held_and_lost_when_taken_away(settings: Settings) -> None:
    short = settings.model_copy(
        update={"backfill": settings.backfill.model_copy(update={"lock_timeout": 1.0})}
    )
    target = Target.parse("s3://lock-test/p/")
    client = redis.Redis.from_url(short.worker.broker_url)
    try:
        with hold_lock(short, target) as lease:
            time.sleep(2.5)  # longer than the timeout: only renewal keeps the lock
            lease.check()
            with pytest.raises(LockHeld), hold_lock(short, target):
                pass
            client.delete(target.lock_name)  # as if it had expired and another run took it
            client.set(target.lock_name, "someone-else")
            time.sleep(1.0)
            with pytest.raises(LockLost):
                lease.check()
        assert client.get(target.lock_name) == b"someone-else"  # not released by the loser
        client.delete(target.lock_name)
        with hold_lock(short, target):
            assert client.exists(target.lock_name)
        assert not client.exists(target.lock_name)
    finally:
        client.close()
