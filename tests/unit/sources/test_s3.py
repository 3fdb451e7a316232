"""S3 responses, stubbed with botocore's Stubber (the real protocol is tested against a moto
server in tests/integration/test_sources_s3.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.stub import Stubber

from tagger.errors import AccessDenied, FetchFailed, ImageTooLarge, NotFound, TaggerError
from tagger.schemas import PhotoRef
from tagger.sources import Fetcher
from tests.unit.sources.conftest import make_settings


class _UnreadableBody:
    """A body that fails the test if anyone reads it."""

    closed = False

    def read(self, amt: int | None = None) -> bytes:
        raise AssertionError("body read although ContentLength was over the limit")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("aws_env")
def test_s3_content_length_checked_before_reading(tmp_path: Path) -> None:
    fetcher = Fetcher(make_settings(tmp_path, max_bytes=1000))
    body = _UnreadableBody()
    with Stubber(fetcher.s3_client) as stub:
        stub.add_response(
            "get_object",
            {"Body": body, "ContentLength": 5000, "ETag": '"e1"'},
            {"Bucket": "photos", "Key": "big.jpg"},
        )
        with pytest.raises(ImageTooLarge, match="5000 bytes"):
            fetcher.fetch(PhotoRef(uri="s3://photos/big.jpg"))
    assert body.closed


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("NoSuchKey", 404, NotFound),
        ("NoSuchBucket", 404, NotFound),
        ("AccessDenied", 403, AccessDenied),
        ("SlowDown", 503, FetchFailed),
        ("InternalError", 500, FetchFailed),
    ],
)
def test_s3_errors_become_typed_errors(
    tmp_path: Path, code: str, status: int, error: type[TaggerError]
) -> None:
    fetcher = Fetcher(make_settings(tmp_path))
    with Stubber(fetcher.s3_client) as stub:
        stub.add_client_error("get_object", code, http_status_code=status)
        with pytest.raises(error, match=code) as caught:
            fetcher.fetch(PhotoRef(uri="s3://photos/cat.jpg"))
    assert caught.type is error


@pytest.mark.usefixtures("aws_env")
def test_s3_head_returns_unquoted_etag_and_others_none(tmp_path: Path) -> None:
    fetcher = Fetcher(make_settings(tmp_path))
    with Stubber(fetcher.s3_client) as stub:
        stub.add_response("head_object", {"ETag": '"abc123"'}, {"Bucket": "b", "Key": "k.jpg"})
        assert fetcher.head(PhotoRef(uri="s3://b/k.jpg")) == "abc123"
    assert fetcher.head(PhotoRef(uri="https://example.com/x.jpg")) is None
    assert fetcher.head(PhotoRef(uri=str(tmp_path / "x.jpg"))) is None
