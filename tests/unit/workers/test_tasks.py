"""The tagging task's failure policy, with in-process fakes for the pipeline and the store."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery import Celery

from tagger.config import Settings, WorkerSettings
from tagger.errors import ErrorCode, StoreUnavailable
from tagger.pipeline import Outcome
from tagger.queueing import TAG_TASK, make_celery
from tagger.schemas import Status, TagResult
from workers.tasks import register_tasks


@dataclass
class FakeStore:
    fail_saves: int = 0
    saved: list[TagResult] = field(default_factory=list)
    marked: dict[str, str] = field(default_factory=dict)

    def known(self, refs: Sequence[str]) -> dict[str, Any]:
        return {}

    def save(self, results: Sequence[TagResult]) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise StoreUnavailable("store unreachable (OperationalError)")
        self.saved.extend(results)

    def mark_job_items(self, job_id: str, states: Mapping[str, str]) -> None:
        self.marked.update(states)


class FakeFetcher:
    """Reads 100 bytes per task, so the task's export of them can be seen."""

    def take_fetched_bytes(self) -> dict[str, int]:
        return {"s3": 100}


class FakePipeline:
    """Fails the refs in ``transient`` for their first ``failures`` attempts."""

    def __init__(self, settings: Settings, transient: set[str], failures: int = 10**6) -> None:
        self.settings = settings
        self.transient = transient
        self.failures = failures
        self.calls: list[list[str]] = []
        self.versions = {"classify": "v1"}
        self.fetcher = FakeFetcher()

    def tag_stream(
        self,
        refs: Sequence[str],
        known: Mapping[str, Any],
        batch_size: int,
        previous: Mapping[str, TagResult] | None = None,
    ) -> Iterator[list[TagResult]]:
        self.calls.append(list(refs))
        failing = len(self.calls) <= self.failures
        yield [
            TagResult(ref=ref, status=Status.FAILED, error="fetch_failed", transient=True)
            if ref in self.transient and failing
            else TagResult(ref=ref, status=Status.TAGGED, model_version="v1")
            for ref in refs
        ]

    def outcomes(
        self,
        refs: Sequence[str],
        known: Mapping[str, Any],
        batch_size: int,
        previous: Mapping[str, TagResult] | None = None,
        *,
        thumbnails: bool = False,
    ) -> Iterator[list[Outcome]]:
        for batch in self.tag_stream(refs, known, batch_size, previous):
            yield [Outcome(result) for result in batch]


@dataclass
class FakeResources:
    settings: Settings
    pipeline: FakePipeline
    store: FakeStore
    writeback: None = None
    thumbnails: None = None


class FakeHolder:
    def __init__(self, settings: Settings, resources: FakeResources) -> None:
        self.settings = settings
        self.resources = resources

    def get(self) -> FakeResources:
        return self.resources


def settings_with(**worker: Any) -> Settings:
    return Settings(worker=WorkerSettings(retry_backoff_max=1, **worker))


def eager_app(settings: Settings, store: FakeStore, pipeline: FakePipeline) -> Celery:
    app = make_celery(settings)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = False
    resources = FakeResources(settings, pipeline, store)
    register_tasks(app, FakeHolder(settings, resources))  # type: ignore[arg-type]
    return app


def test_a_short_store_outage_is_waited_out_inside_the_task() -> None:
    settings = settings_with(store_wait=10)
    store = FakeStore(fail_saves=2)
    pipeline = FakePipeline(settings, transient=set())
    app = eager_app(settings, store, pipeline)
    result = app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": ["s3://b/a.jpg"]})
    assert result.successful(), result.traceback
    assert [r.ref for r in store.saved] == ["s3://b/a.jpg"]
    assert store.marked == {"s3://b/a.jpg": "done"}
    assert len(pipeline.calls) == 1, "the photo was inferred once; only the save waited"


def test_a_long_store_outage_hands_the_batch_back_instead_of_acking_it() -> None:
    settings = settings_with(store_wait=0.3)
    store = FakeStore(fail_saves=10**6)
    pipeline = FakePipeline(settings, transient=set())
    app = eager_app(settings, store, pipeline)
    result = app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": ["s3://b/a.jpg"]})
    assert result.state == "REJECTED"
    assert store.saved == [] and store.marked == {}


def test_transient_photos_are_retried_alone_until_they_succeed() -> None:
    settings = settings_with()
    store = FakeStore()
    pipeline = FakePipeline(settings, transient={"s3://b/flaky.jpg"}, failures=3)
    app = eager_app(settings, store, pipeline)
    refs = ["s3://b/ok.jpg", "s3://b/flaky.jpg"]
    app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": refs})
    assert pipeline.calls == [refs] + [["s3://b/flaky.jpg"]] * 3
    assert store.marked == {"s3://b/ok.jpg": "done", "s3://b/flaky.jpg": "done"}
    assert all(r.status == Status.TAGGED for r in store.saved)


def test_past_the_patience_a_transient_failure_is_recorded_not_left_queued() -> None:
    settings = settings_with(outage_patience=60)
    store = FakeStore()
    pipeline = FakePipeline(settings, transient={"s3://b/down.jpg"})
    app = eager_app(settings, store, pipeline)
    started = time.time() - 61
    app.tasks[TAG_TASK].apply(
        kwargs={"job_id": "j", "refs": ["s3://b/down.jpg"], "first_failure_at": started}
    )
    assert len(pipeline.calls) == 1
    assert store.marked == {"s3://b/down.jpg": "failed"}
    [failed] = store.saved
    assert failed.status == Status.FAILED and failed.transient
    assert failed.error == ErrorCode.FETCH_FAILED


def test_a_task_without_refs_is_refused() -> None:
    settings = settings_with()
    app = eager_app(settings, FakeStore(), FakePipeline(settings, set()))
    result = app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": []})
    assert result.failed()
    with pytest.raises(ValueError):
        result.get(propagate=True)


def test_each_exit_of_the_task_is_measured() -> None:
    """Retries by reason, seconds by outcome, photos once final, bytes read per task."""
    from prometheus_client import REGISTRY

    def value(metric: str, /, **labels: str) -> float:
        return REGISTRY.get_sample_value(metric, labels) or 0.0

    names = [
        ("tagger_task_retries_total", {"reason": "transient"}),
        ("tagger_task_retries_total", {"reason": "store_unavailable"}),
        ("tagger_task_seconds_count", {"outcome": "retry"}),
        ("tagger_task_seconds_count", {"outcome": "done"}),
        ("tagger_task_seconds_count", {"outcome": "requeued"}),
        ("tagger_photos_total", {"status": "tagged", "error": "none"}),
        ("tagger_fetched_bytes_total", {"source": "s3"}),
    ]
    before = [value(name, **labels) for name, labels in names]

    settings = settings_with()
    pipeline = FakePipeline(settings, transient={"s3://b/flaky.jpg"}, failures=2)
    app = eager_app(settings, FakeStore(), pipeline)
    app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": ["s3://b/ok.jpg", "s3://b/flaky.jpg"]})
    down = settings_with(store_wait=0.1)
    app = eager_app(down, FakeStore(fail_saves=10**6), FakePipeline(down, set()))
    app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": ["s3://b/a.jpg"]})

    after = [value(name, **labels) for name, labels in names]
    # 2 retries then done; then one batch handed back; 2 photos tagged; 100 bytes per task
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 2, 1, 1, 2, 400]
