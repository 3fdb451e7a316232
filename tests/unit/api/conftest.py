"""An API over a real SQLite store holding made-up results, and kombu's in-memory broker in
place of Redis (unit tests; the integration tests run the real server against real workers)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tagger.api.app import create_app
from tagger.config import ApiSettings, ApiToken, Settings, WorkerSettings
from tagger.errors import ErrorCode
from tagger.schemas import (
    AnalyzerRun,
    Colours,
    ColourShare,
    DetectedObject,
    Safety,
    Status,
    Tag,
    TagResult,
)
from tagger.store import SqlTagStore
from tagger.thumbnails import thumbnail_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
READER = "reader-token-0123456789"
SUBMITTER = "submitter-token-0123456789"


def made_up(
    ref: str,
    tags: dict[str, float],
    *,
    seed: int,
    colour: str = "grey",
    people: int = 0,
    nsfw: float = 0.01,
    minutes: int = 0,
) -> TagResult:
    vector = np.random.default_rng(seed).random(16)
    parents = {"car": ["vehicle"], "dog": ["animal"], "cat": ["animal"], "beach": ["place"]}
    shown = [Tag(name=n, score=s, parents=parents.get(n, [])) for n, s in tags.items()]
    shown.append(Tag(name=colour, score=0.6, parents=["colour"]))
    if people:
        shown.append(Tag(name="person", score=0.9))
    return TagResult(
        ref=ref,
        status=Status.TAGGED,
        etag="e",
        model_version="m",
        width=640,
        height=480,
        analyzers={"classify": AnalyzerRun(version="m", fields=["classes"])},
        tags=shown,
        objects=[DetectedObject(label="person", score=0.9, box=(0.1, 0.2, 0.5, 0.9))]
        if people
        else [],
        counts={"person": people} if people else {},
        colours=Colours(
            photo=[ColourShare(name=colour, fraction=1.0)],
            subject=[ColourShare(name=colour, fraction=1.0)],
        ),
        safety=Safety(nsfw=nsfw),
        signature=(vector / np.linalg.norm(vector)).tolist(),
        tagged_at=T0 + timedelta(minutes=minutes),
    )


def failed(ref: str, minutes: int) -> TagResult:
    return TagResult(
        ref=ref,
        status=Status.FAILED,
        reason="not an image",
        error=ErrorCode.NOT_AN_IMAGE,
        model_version="m",
        tagged_at=T0 + timedelta(minutes=minutes),
    )


def webp(colour: tuple[int, int, int], size: tuple[int, int] = (96, 72)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "WEBP")
    return buffer.getvalue()


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        # kombu's memory transport is one per process: a queue of the test's own
        worker=WorkerSettings(broker_url="memory://", queue=f"api-{uuid.uuid4().hex[:8]}"),
    )


@pytest.fixture
def filled(api_settings: Settings) -> list[TagResult]:
    """Photos of cars, dogs and cats on beaches, one flagged, two failed; each tagged one a
    minute after the other, so "most recent first" has one answer."""
    photos = [
        made_up("s3://p/car-red.jpg", {"car": 0.9}, seed=1, colour="red", minutes=1),
        made_up(
            "s3://p/car-blue.jpg", {"car": 0.8, "beach": 0.5}, seed=2, colour="blue", minutes=2
        ),
        made_up("s3://p/dog.jpg", {"dog": 0.9, "beach": 0.4}, seed=3, people=1, minutes=3),
        made_up("s3://p/cat.jpg", {"cat": 0.95}, seed=4, minutes=4),
        made_up("s3://p/crowd.jpg", {"beach": 0.7}, seed=5, people=4, minutes=5),
        made_up("s3://p/flagged.jpg", {"beach": 0.6}, seed=6, nsfw=0.93, minutes=6),
        failed("s3://p/broken-1.jpg", minutes=7),
        failed("s3://p/broken-2.jpg", minutes=8),
    ]
    store = SqlTagStore.from_settings(api_settings)
    try:
        store.save(photos)
    finally:
        store.close()
    thumbnails = thumbnail_store(api_settings)
    assert thumbnails is not None
    for i, result in enumerate(photos[:6]):
        thumbnails.put(result.ref, webp((40 * i, 200, 255 - 40 * i)))
    return photos


@pytest.fixture
def make_api(api_settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """A started app (lifespan run) over ``api_settings``, with or without tokens."""
    opened: list[TestClient] = []

    def make(*, tokens: bool = False, **api: object) -> TestClient:
        chosen = ApiSettings(
            tokens=[
                ApiToken(name="reader", token=READER, scopes=["read"]),
                ApiToken(name="submitter", token=SUBMITTER, scopes=["read", "submit"]),
            ]
            if tokens
            else [],
            **api,  # type: ignore[arg-type]
        )
        client = TestClient(create_app(api_settings.model_copy(update={"api": chosen})))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., TestClient], filled: list[TagResult]) -> TestClient:
    return make_api()
