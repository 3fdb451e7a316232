"""Thumbnails in the service: a real Celery worker writes them beside the S3 sidecars."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.client import TaggerClient
from tagger.config import FetchSettings, S3Settings, Settings
from tagger.thumbnails import (
    S3ThumbnailStore,
    ThumbnailStoreError,
    make_thumbnail,
    thumbnail_store,
)
from tests.conftest import jpeg_bytes
from tests.integration.services import CeleryWorker, free_port
from tests.unit.test_thumbnails import picture

pytestmark = pytest.mark.integration


def test_a_worker_writes_a_webp_thumbnail_beside_each_sidecar(
    service_settings: Settings,
    moto_s3: object,
    start_worker: Callable[..., CeleryWorker],
    sample_photos: dict[str, bytes],
) -> None:
    s3 = moto_s3
    s3.create_bucket(Bucket="th-photos")  # type: ignore[attr-defined]
    s3.create_bucket(Bucket="th-results")  # type: ignore[attr-defined]
    photos = {
        "chelsea.jpg": sample_photos["chelsea"],  # 451x300
        "astronaut.jpg": sample_photos["astronaut"],  # 512x512
        "small.jpg": jpeg_bytes(np.full((96, 120, 3), 90, np.uint8)),  # kept at its size
        "cut.jpg": sample_photos["coffee"][:300],
    }
    for key, body in photos.items():
        s3.put_object(Bucket="th-photos", Key=key, Body=body)  # type: ignore[attr-defined]
    refs = [f"s3://th-photos/{key}" for key in photos]
    settings = service_settings.model_copy(
        update={
            "s3": service_settings.s3.model_copy(update={"results_prefix": "s3://th-results/tags"})
        }
    )
    start_worker(settings)
    with TaggerClient(settings) as client:
        counts = client.submit(refs).wait(timeout=180)
    assert (counts.done, counts.failed) == (3, 1)

    listed = s3.list_objects_v2(Bucket="th-results", Prefix="tags/")  # type: ignore[attr-defined]
    keys = {item["Key"] for item in listed.get("Contents", [])}
    expected_sizes = {
        "chelsea.jpg": (384, 255),
        "astronaut.jpg": (384, 384),
        "small.jpg": (120, 96),
    }
    for name, size in expected_sizes.items():
        ref = f"s3://th-photos/{name}"
        key = f"tags/thumbnails/{hashlib.sha256(ref.encode()).hexdigest()}.webp"
        assert key in keys and f"tags/th-photos/{name}.json" in keys
        stored = s3.get_object(Bucket="th-results", Key=key)  # type: ignore[attr-defined]
        assert stored["ContentType"] == "image/webp"
        image = Image.open(io.BytesIO(stored["Body"].read()))
        assert (image.format, image.size) == ("WEBP", size)
    # nothing for the photo that failed: 3 sidecars and 3 thumbnails
    assert len(keys) == 6, sorted(keys)
    # what the API will do: read a thumbnail back from Settings alone
    store = thumbnail_store(settings)
    assert store is not None
    chelsea = store.get("s3://th-photos/chelsea.jpg")
    assert chelsea is not None and Image.open(io.BytesIO(chelsea)).size == (384, 255)
    assert store.get("s3://th-photos/cut.jpg") is None


# -- the S3 store, through botocore's real HTTP stack ----------------------------------------


def thumbs_settings(endpoint: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        fetch=FetchSettings(connect_timeout=0.5, read_timeout=2.0),
        s3=S3Settings(
            endpoint_url=endpoint,
            region="us-east-1",
            addressing_style="path",
            max_attempts=1,
            results_prefix="s3://thumbs-results/tags",
        ),
    )


def test_s3_round_trip_beside_the_sidecars(
    moto_server: str, aws_credentials: None, tmp_path: Path
) -> None:
    settings = thumbs_settings(moto_server, tmp_path)
    store = thumbnail_store(settings)
    assert isinstance(store, S3ThumbnailStore)
    store.client.create_bucket(Bucket="thumbs-results")
    assert store.get("s3://photos/cat.jpg") is None
    small = make_thumbnail(picture(500, 375), 384, 75)
    store.put("s3://photos/cat.jpg", small)
    store.put_many({"s3://photos/dog.jpg": b"dog", "https://example.com/x.jpg": b"x"})
    assert store.get("s3://photos/cat.jpg") == small
    assert store.get("s3://photos/dog.jpg") == b"dog"
    digest = hashlib.sha256(b"s3://photos/cat.jpg").hexdigest()
    head = store.client.head_object(Bucket="thumbs-results", Key=f"tags/thumbnails/{digest}.webp")
    assert head["ContentType"] == "image/webp"
    listed = store.client.list_objects_v2(Bucket="thumbs-results", Prefix="tags/thumbnails/")
    assert listed["KeyCount"] == 3


def test_s3_down_is_a_thumbnail_error_naming_every_unwritten_photo(
    aws_credentials: None, tmp_path: Path
) -> None:
    store = thumbnail_store(thumbs_settings(f"http://127.0.0.1:{free_port()}", tmp_path))
    assert store is not None
    with pytest.raises(ThumbnailStoreError) as raised:
        store.put_many({"s3://p/a.jpg": b"a", "s3://p/b.jpg": b"b", "s3://p/c.jpg": b"c"})
    assert set(raised.value.failed) == {"s3://p/a.jpg", "s3://p/b.jpg", "s3://p/c.jpg"}
    assert "127.0.0.1" not in str(raised.value)
    with pytest.raises(ThumbnailStoreError):
        store.get("s3://p/a.jpg")
