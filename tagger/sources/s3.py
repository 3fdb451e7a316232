"""``s3://bucket/key`` photos through one boto3 client, and the client every other part of
tagger uses to reach the same buckets the same way."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from tagger.config import Settings
from tagger.errors import AccessDenied, FetchFailed, NotFound, PermanentError, TaggerError
from tagger.schemas import PhotoRef
from tagger.sources.base import Fetched, clean_etag
from tagger.sources.body import read_bounded

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404"})
_DENIED = frozenset(
    {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
     "SignatureDoesNotMatch", "AccountProblem", "InvalidObjectState"}
)  # fmt: skip
_TRANSIENT = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
     "RequestLimitExceeded", "RequestTimeout", "InternalError", "ServiceUnavailable",
     "ExpiredToken", "RequestExpired", "RequestTimeTooSkewed", "500", "502", "503", "504"}
)  # fmt: skip


def make_s3_client(settings: Settings) -> S3Client:
    """The boto3 S3 client every part of tagger uses (fetcher, backfill listing, write-back):
    timeouts, retries, addressing style and endpoint from Settings, so they all reach the
    same buckets the same way. Credentials come from boto3's default chain."""
    fetch, s3 = settings.fetch, settings.s3
    config = Config(
        connect_timeout=fetch.connect_timeout,
        read_timeout=fetch.read_timeout,
        retries={"max_attempts": s3.max_attempts, "mode": "standard"},
        s3={"addressing_style": s3.addressing_style},
        max_pool_connections=max(10, fetch.io_threads),
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=s3.endpoint_url, region_name=s3.region, config=config
    )


class S3Source:
    """Objects by bucket and key; the ETag comes free with every answer."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        """The one boto3 client, made on first use so file- and URL-only runs never need AWS
        configuration. Creating clients is not thread-safe in boto3; using one is."""
        with self._lock:
            if self._client is None:
                self._client = make_s3_client(self._settings)
            return self._client

    def fetch(self, ref: PhotoRef) -> Fetched:
        bucket, key = ref.bucket_key
        shown = ref.uri
        limit = self._settings.image.max_bytes
        deadline = time.monotonic() + self._settings.fetch.total_timeout
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                data = read_bounded(
                    body.read, response.get("ContentLength"), shown, limit, deadline
                )
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise _error(shown, exc) from exc
        return Fetched(ref=ref.uri, data=data, etag=clean_etag(response.get("ETag")))

    def head(self, ref: PhotoRef) -> str | None:
        """The ETag without downloading, so a repeat can be skipped cheaply."""
        bucket, key = ref.bucket_key
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _error(ref.uri, exc) from exc
        return clean_etag(response.get("ETag"))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _error(shown: str, exc: ClientError | BotoCoreError) -> TaggerError:
    """botocore's failure as a typed error; botocore has already retried what it retries."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = f"{shown}: S3 {code or 'error'} (HTTP {status})"
        if code in _TRANSIENT or status in (408, 429) or status >= 500:
            return FetchFailed(reason)
        if code in _NOT_FOUND or status == 404:
            return NotFound(reason)
        if code in _DENIED or status in (401, 403):
            return AccessDenied(reason)
        return PermanentError(reason)
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(f"{shown}: no AWS credentials found")
    if isinstance(exc, ParamValidationError):
        return NotFound(f"{shown}: not a valid S3 bucket or key")
    return FetchFailed(f"{shown}: {type(exc).__name__}: {exc}")
