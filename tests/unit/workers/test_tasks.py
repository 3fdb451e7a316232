"""The tagging task's failure policy, with in-process fakes for the pipeline and the store."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery import Celery
from sqlalchemy.exc import OperationalError

from tagger.config import Settings, WorkerSettings
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
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        self.saved.extend(results)

    def mark_job_items(self, job_id: str, states: Mapping[str, str]) -> None:
        self.marked.update(states)


class FakePipeline:
    def __init__(self, transient: set[str]) -> None:
        self.transient = transient
        self.calls: list[list[str]] = []

    def tag_stream(
        self, refs: Sequence[str], known: Mapping[str, Any], batch_size: int
    ) -> Iterator[list[TagResult]]:
        self.calls.append(list(refs))
        yield [
            TagResult(ref=ref, status=Status.FAILED, error="fetch_failed", transient=True)
            if ref in self.transient
            else TagResult(ref=ref, status=Status.TAGGED, model_version="v1")
            for ref in refs
        ]


@dataclass
class FakeResources:
    settings: Settings
    pipeline: FakePipeline
    store: FakeStore
    writeback: None = None


class FakeHolder:
    def __init__(self, settings: Settings, resources: FakeResources) -> None:
        self.settings = settings
        self.resources = resources

    def get(self) -> FakeResources:
        return self.resources


def eager_app(store: FakeStore, pipeline: FakePipeline, retry_max: int = 3) -> Celery:
    settings = Settings(worker=WorkerSettings(retry_max=retry_max, retry_backoff_max=1))
    app = make_celery(settings)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = False
    register_tasks(app, FakeHolder(settings, FakeResources(settings, pipeline, store)))  # type: ignore[arg-type]
    return app


def test_a_database_outage_retries_the_batch_instead_of_losing_it() -> None:
    store = FakeStore(fail_saves=2)
    pipeline = FakePipeline(transient=set())
    app = eager_app(store, pipeline)
    result = app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": ["s3://b/a.jpg"]})
    assert result.successful(), result.traceback
    assert [r.ref for r in store.saved] == ["s3://b/a.jpg"]
    assert len(pipeline.calls) == 3


def test_transient_photos_are_retried_alone_and_recorded_on_the_last_attempt() -> None:
    store = FakeStore()
    pipeline = FakePipeline(transient={"s3://b/flaky.jpg"})
    app = eager_app(store, pipeline, retry_max=2)
    refs = ["s3://b/ok.jpg", "s3://b/flaky.jpg"]
    app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": refs})
    assert pipeline.calls == [refs, ["s3://b/flaky.jpg"], ["s3://b/flaky.jpg"]]
    assert store.marked == {"s3://b/ok.jpg": "done", "s3://b/flaky.jpg": "failed"}
    flaky = [r for r in store.saved if r.ref == "s3://b/flaky.jpg"]
    assert len(flaky) == 1 and flaky[0].status == Status.FAILED


def test_a_task_without_refs_is_refused() -> None:
    app = eager_app(FakeStore(), FakePipeline(set()))
    result = app.tasks[TAG_TASK].apply(kwargs={"job_id": "j", "refs": []})
    assert result.failed()
    with pytest.raises(ValueError):
        result.get(propagate=True)
