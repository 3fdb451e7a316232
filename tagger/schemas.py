"""The data that crosses tagger's boundaries: queue messages, store rows, CLI and client output.

Everything here is a pydantic model so a message from another process, a JSON line from the
CLI and a row read back from the store are validated the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

RefKind = Literal["s3", "https", "http", "file"]


class PhotoRef(BaseModel):
    """Where a photo lives: ``s3://bucket/key``, ``https://…`` or a local file path.

    Validated on construction so a bad reference is refused when it is submitted, with the
    reference named in the error, rather than failing later inside a worker.
    """

    model_config = ConfigDict(frozen=True)

    uri: str

    @field_validator("uri")
    @classmethod
    def _valid(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("empty photo reference")
        if "\x00" in value:
            raise ValueError(f"photo reference contains a NUL byte: {value!r}")
        parts = urlsplit(value)
        scheme = parts.scheme.lower()
        if scheme == "s3":
            bucket, _, key = value[len("s3://") :].partition("/")
            if not bucket or not key:
                raise ValueError(f"S3 reference needs a bucket and a key: {value!r}")
            return value
        if scheme in ("http", "https"):
            if not parts.hostname:
                raise ValueError(f"URL has no host: {value!r}")
            return value
        if scheme == "file":
            return str(Path(parts.path).resolve())
        if scheme and len(scheme) > 1:
            raise ValueError(f"unsupported scheme {scheme!r} in photo reference {value!r}")
        return str(Path(value).expanduser().resolve())

    @property
    def kind(self) -> RefKind:
        scheme = urlsplit(self.uri).scheme.lower()
        if scheme == "s3":
            return "s3"
        if scheme in ("http", "https"):
            return scheme  # type: ignore[return-value]
        return "file"

    @property
    def bucket_key(self) -> tuple[str, str]:
        """Bucket and key of an ``s3://`` reference, split by hand: a key may hold ``?`` or
        ``#``, which a URL parser would take for a query or fragment."""
        bucket, _, key = self.uri[len("s3://") :].partition("/")
        return bucket, key

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, value: str | PhotoRef) -> PhotoRef:
        return value if isinstance(value, PhotoRef) else cls(uri=value)


class Status(StrEnum):
    TAGGED = "tagged"
    FAILED = "failed"
    SKIPPED = "skipped"


class ClassScore(BaseModel):
    """One ImageNet class the model saw, as WordNet id, readable label and probability."""

    wnid: str
    label: str
    score: float


class Tag(BaseModel):
    """A friendly tag; its score is the summed probability of every class that maps to it."""

    name: str
    score: float
    parents: list[str] = Field(default_factory=list)


class TagResult(BaseModel):
    """The outcome for one photo; a failure is a result too, so nothing is silently lost."""

    ref: str
    status: Status
    reason: str | None = None
    error: str | None = Field(default=None, description="machine-readable failure kind")
    transient: bool = Field(
        default=False, description="the failure may go away on retry (network, throttling)"
    )
    model_version: str | None = None
    etag: str | None = None
    width: int | None = None
    height: int | None = None
    classes: list[ClassScore] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)
    tagged_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def tag_names(self) -> list[str]:
        """Friendly tags and their parents, most likely first, without repeats."""
        seen: dict[str, None] = {}
        for tag in self.tags:
            seen.setdefault(tag.name, None)
        for tag in self.tags:
            for parent in tag.parents:
                seen.setdefault(parent, None)
        return list(seen)


class JobCounts(BaseModel):
    """Progress of a submitted job, as the client reports it."""

    total: int
    queued: int
    done: int
    failed: int
    skipped: int

    @property
    def finished(self) -> bool:
        return self.done + self.failed + self.skipped >= self.total


class PreprocessSpec(BaseModel):
    """How a decoded photo becomes the model's input tensor; stored in the model manifest so
    the weights and their preprocessing can never drift apart."""

    model_config = ConfigDict(frozen=True)

    size: int = Field(gt=0, description="square input side in pixels")
    crop_fraction: float = Field(default=0.875, gt=0, le=1)
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    colour_order: Literal["RGB"] = "RGB"
    layout: Literal["NHWC"] = "NHWC"

    @property
    def resize_to(self) -> int:
        """Shorter side after resizing, before the centre crop."""
        return round(self.size / self.crop_fraction)
