"""Shared by the source tests: a real JPEG and Settings in a private folder."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from skimage import data as skdata

from tagger.config import FetchSettings, ImageSettings, S3Settings, Settings
from tagger.schemas import PhotoRef
from tagger.sources import Fetcher


@pytest.fixture(scope="session")
def photo() -> bytes:
    out = io.BytesIO()
    pixels = skdata.chelsea()  # type: ignore[no-untyped-call]
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


def make_settings(tmp_path: Path, *, max_bytes: int = 10_000_000, **fetch: Any) -> Settings:
    """Settings whose S3 endpoint is a closed loopback port, so nothing reaches real AWS."""
    return Settings(
        data_dir=tmp_path,
        image=ImageSettings(max_bytes=max_bytes),
        fetch=FetchSettings(**fetch),
        s3=S3Settings(endpoint_url="http://127.0.0.1:9", region="us-east-1", max_attempts=1),
    )


def fetch(fetcher: Fetcher, uri: str) -> bytes:
    return fetcher.fetch(PhotoRef(uri=uri)).data
