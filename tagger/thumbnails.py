"""Small WebP previews of tagged photos, made by the worker and kept beside the results.

A gallery shows many photos at once; fetching and decoding every full-size original for that
would cost what tagging it cost. The worker already holds each photo decoded (upright,
reduced by the JPEG's DCT scaling) while its analysers prepare their inputs, so it makes the
thumbnail there, from those pixels, with no second fetch (:mod:`tagger.pipeline`), and this
module encodes and stores it. The HTTP API reads it back through :func:`thumbnail_store`,
which needs only :class:`~tagger.config.Settings` (no fetcher, no pipeline).

Thumbnails are keyed by the SHA-256 of the photo's :attr:`~tagger.schemas.PhotoRef.identity`
(never the full reference: a presigned URL's signature must not reach a file name or a key),
under ``<data_dir>/thumbnails/`` or, when ``s3.results_prefix`` is set, beside the JSON
sidecars in ``<results_prefix>/thumbnails/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image

from tagger.config import Settings
from tagger.errors import ConfigError, TaggerError
from tagger.imaging.opening import open_image
from tagger.sources import make_s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONTENT_TYPE = "image/webp"
SUFFIX = ".webp"

# libwebp's effort (0 fastest … 6 smallest). Measured at 384x288, quality 75 (CPU ms, one
# thread, from a 500x375 photo / a 12 MP one drafted to 1000x750): method 0 5.1 / 5.9 ms
# (13.1 / 17.0 KB), 2 8.5 / 8.8 ms (10.5 / 13.6 KB), Pillow's default 4 18.5 / 19.1 ms
# (10.0 / 13.1 KB), 6 40 / 43 ms. The default analysers cost a photo ~40 ms of CPU; a
# thumbnail should add a fraction of that, not half, for a few KB a gallery does not miss.
WEBP_METHOD = 0
# Hamming costs what bilinear costs and is sharper when reducing (Pillow's documentation).
_RESAMPLE = Image.Resampling.HAMMING
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})


def make_thumbnail(image: Image.Image, side: int, quality: int) -> bytes:
    """``image`` as WebP with its long side at most ``side`` pixels, never enlarged.

    ``image`` must already be upright (the decoder applies the EXIF orientation), since the
    thumbnail carries no metadata: no orientation to apply, no EXIF (GPS) to leak.
    """
    if side < 1:
        raise ValueError(f"thumbnail side must be positive, not {side}")
    if image.mode not in ("RGB", "RGBA"):  # the decoder gives RGB; a palette resizes badly
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    width, height = image.size
    scale = side / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, _RESAMPLE)
    out = io.BytesIO()
    image.save(out, "WEBP", quality=quality, method=WEBP_METHOD)
    return out.getvalue()


def decode_side(data: bytes, side: int) -> int:
    """The shorter side a photo's decode must keep for its thumbnail's long side to reach
    ``side`` (or the photo's own, if smaller) without being enlarged.

    The decoder keeps *both* sides at least the side it is asked for (a square JPEG draft
    request, then whole-factor reductions), so a photo with sides ``short <= long`` needs only
    ``side * short / long`` on its shorter one (+1 for the rounding of a reduced size). A 4:3
    or 3:2 photo decoded for the default analysers (300 px) thus already has 400+ px on its
    long side; asking for the full 384 would decode a 12 MP JPEG at 1/4 instead of 1/8
    scale, with every analyser then resizing from 4x the pixels (CPU ms per 12 MP photo,
    default analysers, one thread: 85 without thumbnails, 93 with, 116 with the full side
    asked). The size comes from the header alone (~0.1 ms); a header that does not parse
    asks for the full side, and the decode itself then says what is wrong.
    """
    try:
        with open_image(data, data) as probe:
            width, height = probe.size
    except TaggerError:
        return side
    if width <= 0 or height <= 0:
        return side
    return min(side, math.ceil(side * min(width, height) / max(width, height)) + 1)


def thumbnail_name(identity: str) -> str:
    """The file or object name of a photo's thumbnail: a digest of its identity, so any
    reference (a key with slashes, a URL) gives a flat, safe, fixed-length name."""
    return hashlib.sha256(identity.encode()).hexdigest() + SUFFIX


class ThumbnailStoreError(Exception):
    """Thumbnails could not be written or read; ``failed`` maps each photo's identity to the
    kind of error (an exception's type name, never its text, which may carry a URL)."""

    def __init__(self, failed: Mapping[str, str]) -> None:
        self.failed = dict(failed)
        super().__init__(f"thumbnails failed for {len(self.failed)} photo(s)")


class ThumbnailStore(Protocol):
    """Where thumbnails live, by photo identity. Writes raise :class:`ThumbnailStoreError`
    naming every photo whose thumbnail was not written; ``get`` gives None for a photo
    without one and raises the same error when the store cannot be read."""

    def put(self, identity: str, data: bytes) -> None: ...

    def get(self, identity: str) -> bytes | None: ...

    def put_many(self, items: Mapping[str, bytes]) -> None: ...


def _put_each(put: Callable[[str, bytes], None], items: Mapping[str, bytes]) -> None:
    """Write the items one by one; at the first failure, report it and every item not yet
    written as failed. Thumbnails of a batch share one bucket or disk, so when one write
    fails (S3 down, disk full) the next would too: trying them all would hold a batch of 32
    photos for 32 rounds of connect timeouts and retries."""
    names = list(items)
    for done, identity in enumerate(names):
        try:
            put(identity, items[identity])
        except ThumbnailStoreError as exc:
            error = exc.failed.get(identity, "error")
            raise ThumbnailStoreError(dict.fromkeys(names[done:], error)) from exc


class FileThumbnailStore:
    """Thumbnails as files, ``<root>/<sha[:2]>/<sha>.webp`` (256 folders, so no folder grows
    to millions of entries). A write goes to a temporary file that is then renamed over the
    old one, so a reader (the API) never sees half a thumbnail."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, identity: str) -> Path:
        name = thumbnail_name(identity)
        return self.root / name[:2] / name

    def put(self, identity: str, data: bytes) -> None:
        path = self.path(identity)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("xb") as out:
                out.write(data)
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):  # it may never have been made
                temporary.unlink(missing_ok=True)
            raise ThumbnailStoreError({identity: type(exc).__name__}) from exc

    def get(self, identity: str) -> bytes | None:
        try:
            return self.path(identity).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ThumbnailStoreError({identity: type(exc).__name__}) from exc

    def put_many(self, items: Mapping[str, bytes]) -> None:
        _put_each(self.put, items)


class S3ThumbnailStore:
    """Thumbnails as objects ``<prefix>/<sha>.webp`` in ``bucket``. The client comes from
    ``make_client`` (by default tagger's one way of reaching S3,
    :func:`tagger.sources.make_s3_client`; a worker passes its fetcher's) on first use, so
    building the store needs no AWS configuration."""

    def __init__(self, bucket: str, prefix: str, make_client: Callable[[], S3Client]) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._make_client = make_client
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        # Creating boto3 clients is not thread-safe; using one is.
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def key(self, identity: str) -> str:
        return f"{self.prefix}/{thumbnail_name(identity)}".lstrip("/")

    def put(self, identity: str, data: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(identity), Body=data, ContentType=CONTENT_TYPE
            )
        except (ClientError, BotoCoreError) as exc:
            raise ThumbnailStoreError({identity: type(exc).__name__}) from exc

    def get(self, identity: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(identity))
            body = response["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND:
                return None
            raise ThumbnailStoreError({identity: type(exc).__name__}) from exc
        except BotoCoreError as exc:
            raise ThumbnailStoreError({identity: type(exc).__name__}) from exc

    def put_many(self, items: Mapping[str, bytes]) -> None:
        _put_each(self.put, items)


def thumbnail_store(
    settings: Settings, *, make_client: Callable[[], S3Client] | None = None
) -> ThumbnailStore | None:
    """The configured thumbnail store: None when thumbnails are off; S3 beside the sidecars
    when ``s3.results_prefix`` is set (``make_client`` gives its client on first use, so a
    worker shares its fetcher's; by default one is made from ``settings``); otherwise files
    in the data folder. Every process that writes or reads thumbnails (worker, ``tagger
    tag``, the API) gets the same store from the same Settings.
    """
    if not settings.thumbnails.enabled:
        return None
    prefix = settings.s3.results_prefix
    if prefix:
        parts = urlsplit(prefix)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(
                f"s3.results_prefix must look like s3://bucket/prefix, not {prefix!r}"
            )
        folder = f"{parts.path.strip('/')}/thumbnails".lstrip("/")
        client = make_client or partial(make_s3_client, settings)
        return S3ThumbnailStore(parts.netloc, folder, client)
    return FileThumbnailStore(settings.data_dir / "thumbnails")
