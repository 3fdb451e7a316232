"""The backfill's decisions, pacing and resumption, against moto's in-process S3 and a SQLite
store; the submitter is a recording fake with a simulated queue."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import typer
from celery.schedules import crontab
from moto import mock_aws
from pydantic import ValidationError
from typer.testing import CliRunner

from tagger.backfill import (
    Backfill,
    BackfillOptions,
    BackfillSummary,
    ListingFailed,
    LockLost,
    Target,
    verdict,
)
from tagger.cli import backfill as backfill_cli
from tagger.config import BackfillSettings, Settings, WorkerSettings
from tagger.errors import transient_codes
from tagger.schemas import AnalyzerRun, Status, TagResult, combined_version
from tagger.store import PhotoState, SqlTagStore
from workers.beat import beat_schedule

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MODEL = "model-v2"
VERSIONS = {"classify": MODEL}
BUCKET = "photos"


class FakeQueue:
    """Records submissions and simulates the broker queue: each submit adds one message per
    ``batch_size`` photos; ``drain`` (called from the backfill's sleep) takes some away."""

    def __init__(self, batch_size: int, fail_on_call: int | None = None) -> None:
        self.batch_size = batch_size
        self.fail_on_call = fail_on_call
        self.chunks: list[list[str]] = []
        self.depth = 0
        self.depth_after_submit: list[int] = []
        self.sleeps = 0

    def submit(self, refs: Sequence[str], *, force: bool = False) -> object:
        if self.fail_on_call is not None and len(self.chunks) + 1 == self.fail_on_call:
            raise ConnectionError("broker went away")
        self.chunks.append(list(refs))
        self.depth += math.ceil(len(refs) / self.batch_size)
        self.depth_after_submit.append(self.depth)
        return None

    def queue_depth(self) -> int:
        return self.depth

    def drain(self, _seconds: float, per_poll: int = 2) -> None:
        self.sleeps += 1
        self.depth = max(0, self.depth - per_poll)

    @property
    def refs(self) -> list[str]:
        return [ref for chunk in self.chunks for ref in chunk]


class CountingStore:
    """The SQL store, counting the lookups the backfill makes."""

    def __init__(self, store: SqlTagStore) -> None:
        self._store = store
        self.known_calls = 0

    def known(self, refs: Sequence[str]) -> dict[str, PhotoState]:
        self.known_calls += 1
        return self._store.known(refs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(aws_env: None) -> Iterator[S3Client]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlTagStore]:
    with SqlTagStore(f"sqlite:///{tmp_path / 'tags.db'}") as opened:
        yield opened


def make_settings(tmp_path: Path, **backfill: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        worker=WorkerSettings(batch_size=4),
        backfill=BackfillSettings(**{"page_size": 100, "chunk_size": 40, **backfill}),
    )


def upload(s3: S3Client, keys: Sequence[str]) -> dict[str, str]:
    """Keys → their ETags (without quotes, as the workers store them)."""
    return {
        key: s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())["ETag"].strip('"')
        for key in keys
    }


def ref(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


def result(
    key: str, status: Status, etag: str | None, model: str, error: str | None = None
) -> TagResult:
    versions = {"classify": model}
    return TagResult(
        ref=ref(key),
        status=status,
        etag=etag,
        model_version=combined_version(versions),
        analyzers={name: AnalyzerRun(version=v) for name, v in versions.items()},
        error=error,
    )


def run(
    settings: Settings,
    s3: S3Client,
    store: Any,
    queue: FakeQueue | None,
    prefix: str = "p/",
    **options: Any,
) -> BackfillSummary:
    backfill = Backfill(
        settings,
        s3,
        store,
        queue,
        VERSIONS,
        BackfillOptions(**options),
        sleep=queue.drain if queue is not None else lambda _s: None,
    )
    return backfill.run(Target(bucket=BUCKET, prefix=prefix))


# -- decisions ------------------------------------------------------------------------------

TRANSIENT: frozenset[str] = transient_codes()


@pytest.mark.parametrize(
    ("state", "etag", "error", "expected"),
    [
        (None, "e1", None, "new"),
        (PhotoState(status=Status.TAGGED, etag="e1", analyzers=VERSIONS), "e1", None, "current"),
        (
            PhotoState(status=Status.TAGGED, etag="e1", analyzers={"classify": "old"}),
            "e1",
            None,
            "outdated",
        ),
        (PhotoState(status=Status.TAGGED, etag="e0", analyzers=VERSIONS), "e1", None, "changed"),
        (PhotoState(status=Status.TAGGED, etag=None, analyzers=VERSIONS), "e1", None, "changed"),
        (PhotoState(status=Status.FAILED, analyzers=VERSIONS), "e1", "not_an_image", "failed"),
        (
            PhotoState(status=Status.FAILED, etag="e1", analyzers=VERSIONS),
            "e1",
            "corrupt",
            "failed",
        ),
        (
            PhotoState(status=Status.FAILED, etag="e0", analyzers=VERSIONS),
            "e1",
            "corrupt",
            "changed",
        ),
        (PhotoState(status=Status.FAILED, analyzers=VERSIONS), "e1", "fetch_failed", "transient"),
        (PhotoState(status=Status.FAILED, analyzers=VERSIONS), "e1", "internal", "failed"),
    ],
)
def test_verdict(state: PhotoState | None, etag: str, error: str | None, expected: str) -> None:
    assert verdict(state, etag, VERSIONS, error, TRANSIENT) == expected


def test_transient_codes_come_from_the_error_types() -> None:
    assert {"fetch_failed", "transient", "store_unavailable"} <= TRANSIENT
    # a bug (internal) and a truncated photo do not heal on retry
    assert not {"not_an_image", "not_found", "corrupt", "truncated", "too_large", "internal"} & (
        TRANSIENT
    )


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://b", "b", ""),
        ("s3://b/", "b", ""),
        ("s3://b/2024/trips/", "b", "2024/trips/"),
        ("S3://b/what?#x", "b", "what?#x"),
    ],
)
def test_target_parse(uri: str, bucket: str, prefix: str) -> None:
    target = Target.parse(uri)
    assert (target.bucket, target.prefix) == (bucket, prefix)
    assert target.cursor_name == f"backfill:{bucket}/{prefix}"


@pytest.mark.parametrize("uri", ["https://b/p", "s3:///p", "/local/path", "b/p"])
def test_target_parse_refuses(uri: str) -> None:
    with pytest.raises(ValueError, match=r"s3://bucket/prefix|no bucket"):
        Target.parse(uri)


# -- runs -----------------------------------------------------------------------------------


def test_submits_only_photos_not_done_one_store_lookup_per_page(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    keys = [f"p/{i:04d}.jpg" for i in range(250)]
    etags = upload(s3, [*keys, "p/notes.txt", "p/raw/", "other/0001.jpg"])
    store.save(
        [result(k, Status.TAGGED, etags[k], MODEL) for k in keys[:50]]
        + [result(k, Status.TAGGED, etags[k], "model-v1") for k in keys[50:70]]
        + [result(k, Status.FAILED, None, MODEL, "not_an_image") for k in keys[70:80]]
        + [result(k, Status.FAILED, None, MODEL, "fetch_failed") for k in keys[80:85]]
        + [result(k, Status.TAGGED, "stale-etag", MODEL) for k in keys[85:90]]
    )
    counting = CountingStore(store)
    queue = FakeQueue(batch_size=4)
    settings = make_settings(tmp_path, max_queue_depth=10_000)

    summary = run(settings, s3, counting, queue)

    expected = [ref(k) for k in keys[80:]]  # transient failures, changed and new photos
    assert queue.refs == expected  # in listing order, each once
    assert all(len(chunk) <= 40 for chunk in queue.chunks)
    assert (summary.listed, summary.submitted, summary.skipped) == (250, 170, 80)
    assert (summary.current, summary.outdated, summary.failed) == (50, 20, 10)
    assert (summary.transient, summary.changed, summary.new) == (5, 5, 160)
    assert summary.other_objects == 2 and summary.pages == 3 and summary.completed
    assert counting.known_calls == 3
    assert store.get_cursor("backfill:photos/p/") is None  # a completed run starts over

    again = FakeQueue(batch_size=4)
    summary = run(settings, s3, store, again, retag_outdated=True, retry_failed=True)
    assert again.refs == [ref(k) for k in keys[50:]]
    assert (summary.submitted, summary.current) == (200, 50)


def test_a_run_broken_after_two_chunks_resumes_and_submits_each_photo_once(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    keys = [f"p/{i:04d}.jpg" for i in range(230)]
    upload(s3, keys)
    settings = make_settings(tmp_path, max_queue_depth=10_000)
    broken = FakeQueue(batch_size=4, fail_on_call=3)

    with pytest.raises(ConnectionError):
        run(settings, s3, store, broken)

    assert len(broken.chunks) == 2
    assert store.get_cursor("backfill:photos/p/") == keys[79]
    resumed = FakeQueue(batch_size=4)
    summary = run(settings, s3, store, resumed)
    assert summary.resumed_after == keys[79] and summary.completed
    assert broken.refs + resumed.refs == [ref(k) for k in keys]
    assert store.get_cursor("backfill:photos/p/") is None


def test_the_queue_bound_holds_and_the_run_waits_for_room(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    keys = [f"p/{i:04d}.jpg" for i in range(300)]
    upload(s3, keys)
    queue = FakeQueue(batch_size=4)  # chunks of 40 photos are 10 messages
    settings = make_settings(tmp_path, max_queue_depth=25, poll_interval=0.01)

    summary = run(settings, s3, store, queue)

    assert summary.submitted == 300
    assert max(queue.depth_after_submit) <= 25
    assert queue.sleeps > 0 and summary.waited_seconds >= 0
    assert summary.max_queue_depth_seen <= 25


def test_a_chunk_larger_than_the_bound_waits_for_an_empty_queue(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    upload(s3, [f"p/{i:04d}.jpg" for i in range(120)])
    queue = FakeQueue(batch_size=4)  # 40 photos → 10 messages, over a bound of 5
    settings = make_settings(tmp_path, max_queue_depth=5, poll_interval=0.01, page_size=120)
    run(settings, s3, store, queue)
    assert queue.depth_after_submit == [10, 10, 10]


def test_limit_stops_early_and_the_next_run_continues(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    keys = [f"p/{i:04d}.jpg" for i in range(100)]
    upload(s3, keys)
    settings = make_settings(tmp_path, max_queue_depth=10_000)
    first = FakeQueue(batch_size=4)

    summary = run(settings, s3, store, first, limit=55)

    assert summary.submitted == 55 and not summary.completed
    assert [len(c) for c in first.chunks] == [40, 15]
    assert store.get_cursor("backfill:photos/p/") == keys[54]
    rest = FakeQueue(batch_size=4)
    assert run(settings, s3, store, rest).completed
    assert first.refs + rest.refs == [ref(k) for k in keys]


def test_dry_run_submits_nothing_and_moves_no_cursor(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    keys = [f"p/{i:04d}.jpg" for i in range(120)]
    etags = upload(s3, keys)
    store.save([result(k, Status.TAGGED, etags[k], MODEL) for k in keys[:20]])
    store.set_cursor("backfill:photos/p/", keys[9])
    summary = run(make_settings(tmp_path), s3, store, None, dry_run=True)
    assert (summary.listed, summary.submitted, summary.current) == (110, 100, 10)
    assert summary.dry_run and summary.jobs == 0 and summary.rate > 0
    assert store.get_cursor("backfill:photos/p/") == keys[9]


def test_restart_ignores_the_saved_position(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    keys = [f"p/{i:04d}.jpg" for i in range(50)]
    upload(s3, keys)
    store.set_cursor("backfill:photos/p/", keys[30])
    queue = FakeQueue(batch_size=4)
    summary = run(make_settings(tmp_path), s3, store, queue, restart=True)
    assert summary.resumed_after is None and queue.refs == [ref(k) for k in keys]


def test_a_lost_lock_stops_before_the_next_submit(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    keys = [f"p/{i:04d}.jpg" for i in range(120)]
    upload(s3, keys)
    queue = FakeQueue(batch_size=4)

    class Lease:
        def check(self) -> None:
            if queue.chunks:
                raise LockLost("gone")

    backfill = Backfill(
        make_settings(tmp_path, max_queue_depth=10_000), s3, store, queue, VERSIONS, lease=Lease()
    )
    with pytest.raises(LockLost):
        backfill.run(Target(bucket=BUCKET, prefix="p/"))
    assert len(queue.chunks) == 1
    assert store.get_cursor("backfill:photos/p/") == keys[39]


def test_a_missing_bucket_is_a_listing_failure(
    s3: S3Client, store: SqlTagStore, tmp_path: Path
) -> None:
    backfill = Backfill(make_settings(tmp_path), s3, store, FakeQueue(4), VERSIONS)
    with pytest.raises(ListingFailed, match="NoSuchBucket"):
        backfill.run(Target(bucket="no-such-bucket", prefix=""))


# -- schedule and CLI -----------------------------------------------------------------------


def test_beat_schedule_has_one_entry_per_target() -> None:
    settings = Settings(
        backfill=BackfillSettings(schedule="30 3 * * 1-5", targets=["s3://a/x/", "s3://b"])
    )
    schedule = beat_schedule(settings)
    assert set(schedule) == {"backfill s3://a/x/", "backfill s3://b/"}
    entry = schedule["backfill s3://a/x/"]
    assert entry["task"] == "tagger.backfill"
    assert entry["kwargs"] == {"target": "s3://a/x/"}
    assert entry["options"] == {"queue": settings.worker.queue}
    assert entry["schedule"] == crontab(minute="30", hour="3", day_of_week="1-5")
    assert beat_schedule(Settings()) == {}


def test_bad_schedules_and_targets_are_refused() -> None:
    with pytest.raises(ValidationError):
        BackfillSettings(schedule="0 2 * *")
    with pytest.raises(ValueError, match="invalid backfill schedule"):
        beat_schedule(
            Settings(backfill=BackfillSettings(schedule="99 2 * * *", targets=["s3://a"]))
        )
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        beat_schedule(Settings(backfill=BackfillSettings(targets=["https://a/b"])))


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("TAGGER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TAGGER_MODEL_DIR", str(tmp_path / "no-models"))
    app = typer.Typer()
    backfill_cli.register(app)
    return app


def test_cli_dry_run_prints_a_json_summary(s3: S3Client, cli: typer.Typer) -> None:
    upload(s3, [f"p/{i:03d}.jpg" for i in range(30)] + ["p/readme.md"])
    outcome = CliRunner().invoke(
        cli,
        ["backfill", "s3://photos/p/", "--dry-run", "--json", "--versions", f"classify={MODEL}"],
    )
    assert outcome.exit_code == 0, outcome.output
    summary = BackfillSummary.model_validate(json.loads(outcome.stdout.strip().splitlines()[-1]))
    assert (summary.listed, summary.submitted, summary.other_objects) == (30, 30, 1)
    assert summary.completed and summary.rate > 0


def test_cli_without_a_model_says_how_to_go_on(s3: S3Client, cli: typer.Typer) -> None:
    outcome = CliRunner().invoke(cli, ["backfill", "s3://photos/p/", "--dry-run"])
    assert outcome.exit_code == 1
    assert "--versions" in outcome.output


def test_cli_refuses_a_target_that_is_not_s3(cli: typer.Typer) -> None:
    outcome = CliRunner().invoke(cli, ["backfill", "/some/folder", "--dry-run"])
    assert outcome.exit_code == 2


def test_beat_command_execs_celery_beat(
    cli: typer.Typer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda _path, argv: calls.append(list(argv)))
    outcome = CliRunner().invoke(cli, ["beat", "--max-interval", "30"])
    assert outcome.exit_code == 0, outcome.output
    (argv,) = calls
    assert argv[1:6] == ["-m", "celery", "-A", "workers.app", "beat"]
    assert f"--schedule={tmp_path / 'data' / 'celerybeat-schedule'}" in argv
    assert argv[-2:] == ["--max-interval", "30"]
