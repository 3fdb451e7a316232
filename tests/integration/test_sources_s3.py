"""Fetching from S3 through botocore's real HTTP stack, against a moto server process."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image
from skimage import data as skdata

from tagger.config import ImageSettings, Settings
from tagger.errors import FetchFailed, ImageTooLarge, NotFound
from tagger.schemas import PhotoRef
from tagger.sources import Fetcher
from tagger_dev.devservers import MotoServer
from tests.integration.conftest import settings_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def photo() -> bytes:
    out = io.BytesIO()
    pixels = skdata.coffee()  # type: ignore[no-untyped-call]
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


@pytest.fixture
def bucket(moto_s3: S3Client) -> str:
    name = f"photos-{uuid.uuid4().hex[:12]}"
    moto_s3.create_bucket(Bucket=name)
    return name


def test_fetch_returns_bytes_and_the_objects_etag(
    s3_settings: Settings, moto_s3: S3Client, bucket: str, photo: bytes
) -> None:
    put = moto_s3.put_object(Bucket=bucket, Key="trips/coffee.jpg", Body=photo)
    ref = PhotoRef(uri=f"s3://{bucket}/trips/coffee.jpg")
    with Fetcher(s3_settings) as fetcher:
        fetched = fetcher.fetch(ref)
        head = fetcher.head(ref)
    assert fetched.data == photo
    assert fetched.ref == ref.uri
    assert fetched.etag == put["ETag"].strip('"')
    assert head == fetched.etag


def test_keys_with_url_punctuation_are_fetched_as_written(
    s3_settings: Settings, moto_s3: S3Client, bucket: str, photo: bytes
) -> None:
    """A key may hold ``?``, ``#`` and ``%``; the reference is split by hand, never parsed as a
    URL, so the object asked for is exactly the one named."""
    key = "odd/a?b=1#c%20d.jpg"
    moto_s3.put_object(Bucket=bucket, Key=key, Body=photo)
    ref = PhotoRef(uri=f"s3://{bucket}/{key}")
    assert ref.identity == ref.uri
    with Fetcher(s3_settings) as fetcher:
        assert fetcher.fetch(ref).data == photo
        assert fetcher.head(ref) is not None


def test_missing_key_and_bucket_are_not_found(s3_settings: Settings, bucket: str) -> None:
    with Fetcher(s3_settings) as fetcher:
        with pytest.raises(NotFound, match="NoSuchKey"):
            fetcher.fetch(PhotoRef(uri=f"s3://{bucket}/absent.jpg"))
        with pytest.raises(NotFound, match="NoSuchBucket"):
            fetcher.fetch(PhotoRef(uri=f"s3://no-such-{uuid.uuid4().hex[:12]}/a.jpg"))
        with pytest.raises(NotFound):
            fetcher.head(PhotoRef(uri=f"s3://{bucket}/absent.jpg"))


def test_object_over_the_limit_is_too_large(
    s3_settings: Settings, moto_s3: S3Client, bucket: str, photo: bytes
) -> None:
    moto_s3.put_object(Bucket=bucket, Key="big.jpg", Body=photo)
    small = s3_settings.model_copy(update={"image": ImageSettings(max_bytes=len(photo) - 1)})
    with Fetcher(small) as fetcher, pytest.raises(ImageTooLarge, match=f"{len(photo)} bytes"):
        fetcher.fetch(PhotoRef(uri=f"s3://{bucket}/big.jpg"))


@pytest.mark.usefixtures("aws_credentials")
def test_stopped_server_is_a_transient_failure(
    spawn_moto_server: Callable[[], MotoServer], tmp_path: Path, photo: bytes
) -> None:
    server = spawn_moto_server()
    settings = settings_for(server.endpoint, tmp_path)
    ref = PhotoRef(uri="s3://outage/cat.jpg")
    with Fetcher(settings) as fetcher:
        fetcher.s3_client.create_bucket(Bucket="outage")
        fetcher.s3_client.put_object(Bucket="outage", Key="cat.jpg", Body=photo)
        assert fetcher.fetch(ref).data == photo
        server.stop()
        with pytest.raises(FetchFailed) as caught:
            fetcher.fetch(ref)
    assert caught.value.permanent is False
