"""The data that crosses tagger's boundaries: queue messages, store rows, CLI and client output.

Everything here is a pydantic model so a message from another process, a JSON line from the
CLI and a row read back from the store are validated the same way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import unquote_plus, urlsplit

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from pydantic_core import PydanticCustomError

RefKind = Literal["s3", "https", "http", "file"]
RefSyntax = Literal["bucket", "url", "path"]

REF_SCHEMES: Mapping[str, RefSyntax] = MappingProxyType(
    {"s3": "bucket", "https": "url", "http": "url", "file": "path"}
)
"""Every scheme a reference may have, and how its text reads: ``bucket`` is
``scheme://bucket/key`` where the key is opaque (it may hold ``?`` or ``#``), ``url`` has a host
and a query that may carry a signature, ``path`` is a local file. This module is the bottom
layer and cannot ask the sources registry, so the registry keeps one Source per entry here and
a unit test holds the two together: a new scheme is one line here and one there."""

# Query parameters that sign or authorise a URL rather than name the photo: AWS (SigV4 and the
# older AWSAccessKeyId form, CloudFront), Google Cloud Storage, Azure SAS, Alibaba OSS, OAuth.
_SECRET_PARAMS = frozenset(
    {"signature", "expires", "sig", "se", "sp", "sv", "sr", "st", "skoid", "sktid", "skt",
     "ske", "sks", "skv", "token", "access_token", "auth", "key", "policy", "key-pair-id",
     "credential", "googleaccessid", "awsaccesskeyid", "ossaccesskeyid", "security-token",
     "api_key", "apikey", "client_secret", "password", "refresh_token", "id_token"}
)  # fmt: skip
_SECRET_PREFIXES = ("x-amz-", "x-goog-", "x-oss-")
_MARK = "<redacted>"
# Two letters at least: ``C:\photos`` is a Windows drive, not a scheme.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PhotoRef(BaseModel):
    """Where a photo lives: ``s3://bucket/key``, ``https://…`` or a local file path.

    Validated on construction so a bad reference is refused when it is submitted, with the
    reference named in the error, rather than failing later inside a worker. Every refusal is
    a pydantic ``ValidationError`` (a ``ValueError``) of type ``invalid_ref`` whose message is
    one line without secrets; nothing else escapes, not even for a path that loops.

    Three names for one reference: :attr:`uri` is what is fetched (a presigned URL keeps its
    signature, so a task message must carry it whole), :attr:`identity` is what the store keys
    the photo by (the same photo under a fresh signature is the same photo, and the store must
    never hold a credential), :attr:`redacted` is what logs and reasons show.
    """

    # The input would otherwise be quoted in the ValidationError, signature included.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    uri: str

    @field_validator("uri")
    @classmethod
    def _valid(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise _invalid("empty photo reference")
        if "\x00" in value:
            raise _invalid("photo reference contains a NUL byte")
        match = _SCHEME.match(value)
        if match is None:
            return _local_path(os.path.expanduser(value), value)
        scheme, rest = match.group(1).lower(), value[match.end() :]
        syntax = REF_SCHEMES.get(scheme)
        if syntax is None:
            if rest.startswith("//"):
                raise _invalid(
                    f"unsupported scheme {scheme!r} in photo reference {_without_query(value)}"
                )
            return _local_path(value, value)  # ``IMG:1.jpg`` is a file name, not a URL
        if not rest.startswith("//"):
            raise _invalid(f"{scheme} reference must start with {scheme}://: {value!r}")
        if syntax == "bucket":
            bucket, _, key = rest[2:].partition("/")
            if not bucket or not key:
                raise _invalid(f"{scheme}:// reference needs a bucket and a key: {value!r}")
            return value
        if syntax == "url":
            return _checked_url(value)
        return _file_url(value)

    @property
    def kind(self) -> RefKind:
        """The scheme, or ``file`` for a local path (a ``file://`` URL is stored as its path)."""
        match = _SCHEME.match(self.uri)
        return cast(RefKind, match.group(1).lower() if match else "file")

    @property
    def bucket_key(self) -> tuple[str, str]:
        """Bucket and key of an ``s3://`` reference, split by hand: a key may hold ``?`` or
        ``#``, which a URL parser would take for a query or fragment."""
        bucket, _, key = self.uri.partition("://")[2].partition("/")
        return bucket, key

    @property
    def identity(self) -> str:
        """The reference as the store knows it: for a URL, without user info, fragment and the
        query parameters that sign or authorise it (other parameters kept, in order, since they
        may choose the photo: ``?w=640&X-Amz-Signature=…`` → ``?w=640``); otherwise the URI."""
        if REF_SCHEMES[self.kind] != "url":
            return self.uri
        return _without_secrets(self.uri, None)

    @property
    def redacted(self) -> str:
        """The identity with a ``<redacted>`` marker where something was removed, for logs and
        reasons: a reader sees that the photo was fetched with credentials, never which."""
        if REF_SCHEMES[self.kind] != "url":
            return self.uri
        return _without_secrets(self.uri, _MARK)

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        # repr lands in tracebacks and log lines, where a signature must not.
        return f"PhotoRef(uri={self.redacted!r})"

    @classmethod
    def parse(cls, value: str | PhotoRef) -> PhotoRef:
        return value if isinstance(value, PhotoRef) else cls(uri=value)


def _invalid(reason: str) -> PydanticCustomError:
    """The one error a reference can fail with. Its type is the ``invalid_ref`` error code
    (``errors.py`` sits beside this layer and cannot be imported here); the reason is passed as
    context so braces in a path are not taken for a template."""
    return PydanticCustomError("invalid_ref", "{reason}", {"reason": reason})


def _checked_url(value: str) -> str:
    shown = _without_query(value)
    if _CONTROL.search(value):
        raise _invalid(f"URL contains control characters: {shown!r}")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise _invalid(f"malformed URL: {shown!r}") from None
    if not parts.hostname:
        raise _invalid(f"URL has no host: {shown!r}")
    return value


def _file_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        raise _invalid(f"malformed file URL: {value!r}") from None
    if parts.netloc not in ("", "localhost"):
        # ``file://photo.jpg`` would otherwise read the current directory.
        raise _invalid(f"file URL names a host ({parts.netloc!r}); use file:///absolute/path")
    if not parts.path:
        raise _invalid(f"file URL has no path: {value!r}")
    return _local_path(parts.path, value)


def _local_path(path: str, given: str) -> str:
    """The absolute path with symlinks resolved, so one file reached by two names is one photo
    in the store. ``os.path.realpath`` never raises on a loop (``Path.resolve`` did, with a
    RuntimeError), so a loop is found by ``stat`` and refused here; a path that does not exist
    (yet) or cannot be read is kept, and the file source names that failure when it reads."""
    try:
        resolved = os.path.realpath(path)
    except (OSError, ValueError) as exc:  # e.g. the working directory was deleted
        raise _invalid(f"cannot resolve path {given!r}: {_os_reason(exc)}") from None
    try:
        os.stat(resolved)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _invalid(f"symlink loop: {given!r} never reaches a file") from None
    except ValueError:
        raise _invalid(f"cannot resolve path {given!r}") from None
    return resolved


def _os_reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def _is_secret(param: str) -> bool:
    name = unquote_plus(param.partition("=")[0]).strip().lower()
    return name in _SECRET_PARAMS or name.startswith(_SECRET_PREFIXES)


def _split_url(url: str) -> tuple[str, bool, str, str, str]:
    """Scheme, whether there is user info, host (with port), path and query, split by hand the
    way ``urlsplit`` does (the authority ends at the first ``/``, ``?`` or ``#``; the fragment
    is dropped), so what is kept is kept byte for byte and a malformed URL still splits."""
    head, _, rest = url.partition("://")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    _, at, host = rest[:cut].rpartition("@")
    path, _, query = rest[cut:].partition("#")[0].partition("?")
    return head, bool(at), host, path, query


def _without_secrets(url: str, mark: str | None) -> str:
    """``url`` without user info, fragment and secret query parameters; with ``mark`` put where
    something was taken out."""
    head, had_user, host, path, query = _split_url(url)
    params = [p for p in query.split("&") if p]
    kept = [p for p in params if not _is_secret(p)]
    if mark is not None and len(kept) < len(params):
        kept.append(mark)
    if mark is not None and had_user:
        host = f"{mark}@{host}"
    return f"{head}://{host}{path}" + (f"?{'&'.join(kept)}" if kept else "")


def _without_query(value: str) -> str:
    """A reference that failed to parse, safe to quote in its error: no user info, no query."""
    head, _, host, path, query = _split_url(value)
    return f"{head}://{host}{path}" + (f"?{_MARK}" if query else "")


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


class DetectedObject(BaseModel):
    """One detection; ``box`` is ``(x0, y0, x1, y1)`` in 0..1 of the photo as displayed."""

    model_config = ConfigDict(frozen=True)

    label: str
    score: float = Field(ge=0.0, le=1.0)
    box: tuple[float, float, float, float]


class ColourShare(BaseModel):
    """One basic colour term and the fraction (0..1) of the region it names."""

    model_config = ConfigDict(frozen=True)

    name: str
    fraction: float = Field(ge=0.0, le=1.0)


class Colours(BaseModel):
    """Colour shares of the whole photo and of its subject, largest first, each >= 1 %."""

    model_config = ConfigDict(frozen=True)

    photo: list[ColourShare]
    subject: list[ColourShare]


class Safety(BaseModel):
    """How likely the photo is not safe for work (open_nsfw's P(nsfw))."""

    model_config = ConfigDict(frozen=True)

    nsfw: float = Field(ge=0.0, le=1.0)


class Findings(BaseModel):
    """What one analyser adds to a photo's result: its tags and the fields it owns (the others
    stay ``None``). A result is the merge of its analysers' findings, and a re-run of one
    outdated analyser replaces exactly its own findings."""

    tags: list[Tag] = Field(default_factory=list)
    classes: list[ClassScore] | None = None
    objects: list[DetectedObject] | None = None
    counts: dict[str, int] | None = None
    colours: Colours | None = None
    safety: Safety | None = None
    text: list[str] | None = None
    signature: list[float] | None = None


class AnalyzerRun(BaseModel):
    """One analyser's part of a result: its version, its own tags (before they were merged
    with the other analysers'), and which result fields it filled."""

    version: str
    tags: list[Tag] = Field(default_factory=list)
    fields: list[str] = Field(default_factory=list)


FINDING_FIELDS: tuple[str, ...] = (
    "classes", "objects", "counts", "colours", "safety", "text", "signature",
)  # fmt: skip
"""The result fields an analyser may own, in the order they appear in a result."""


def merge_tags(groups: Iterable[Sequence[Tag]]) -> list[Tag]:
    """One tag per name across analysers (``dog`` from the classifier and from the detector),
    with the best score and the parents of both, best first."""
    merged: dict[str, Tag] = {}
    for tags in groups:
        for tag in tags:
            seen = merged.get(tag.name)
            if seen is None:
                merged[tag.name] = tag.model_copy(update={"parents": list(tag.parents)})
                continue
            parents = list(dict.fromkeys([*seen.parents, *tag.parents]))
            merged[tag.name] = Tag(name=tag.name, score=max(seen.score, tag.score), parents=parents)
    return sorted(merged.values(), key=lambda tag: (-tag.score, tag.name))


class TagResult(BaseModel):
    """The outcome for one photo; a failure is a result too, so nothing is silently lost.

    ``model_version`` is one combined version of every analyser that produced the result
    (:func:`combined_version`); ``analyzers`` names each of them with its own version and
    ``findings`` keeps each one's own part, so an outdated analyser can be re-run alone.
    """

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
    objects: list[DetectedObject] | None = None
    counts: dict[str, int] | None = None
    colours: Colours | None = None
    safety: Safety | None = None
    text: list[str] | None = None
    signature: list[float] | None = Field(
        default=None,
        exclude=True,
        description="the vector similar photos are found by (tagger.similarity); not printed",
    )
    analyzers: dict[str, AnalyzerRun] = Field(
        default_factory=dict, description="each analyser that produced this result"
    )
    tagged_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def nsfw(self) -> float | None:
        return None if self.safety is None else self.safety.nsfw

    def analyzer_versions(self) -> dict[str, str]:
        return {name: run.version for name, run in self.analyzers.items()}

    def outdated(self, enabled: Mapping[str, str]) -> list[str]:
        """Names of the ``enabled`` analysers (name -> version) this result lacks or has from
        another version, in the order given."""
        mine = self.analyzer_versions()
        return [name for name, version in enabled.items() if mine.get(name) != version]

    def findings_of(self, name: str) -> Findings | None:
        """What analyser ``name`` contributed, rebuilt from this result, to be kept as it is
        while other analysers re-run."""
        run = self.analyzers.get(name)
        if run is None:
            return None
        return Findings.model_validate(
            {"tags": run.tags, **{field: getattr(self, field) for field in run.fields}}
        )

    @classmethod
    def merged(
        cls, findings: Mapping[str, Findings], versions: Mapping[str, str], **fields: Any
    ) -> TagResult:
        """A result made of each analyser's findings (by name, in run order): the fields each
        one owns, all their tags merged, and an :class:`AnalyzerRun` per analyser."""
        owned: dict[str, Any] = {}
        runs: dict[str, AnalyzerRun] = {}
        for name, found in findings.items():
            filled = [f for f in FINDING_FIELDS if getattr(found, f) is not None]
            owned.update({f: getattr(found, f) for f in filled})
            runs[name] = AnalyzerRun(version=versions[name], tags=found.tags, fields=filled)
        return cls(
            **fields,
            **owned,
            tags=merge_tags(found.tags for found in findings.values()),
            analyzers=runs,
            model_version=combined_version({name: versions[name] for name in findings}),
        )

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

    @computed_field  # type: ignore[prop-decorator]
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


def combined_version(versions: Mapping[str, str]) -> str:
    """One short version for a set of analysers (name -> version): a result keeps it as its
    ``model_version``, so "same content, same model" stays one comparison."""
    if not versions:
        return "none"
    text = ";".join(f"{name}={versions[name]}" for name in sorted(versions))
    return "a" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:VERSION_HEX]


VERSION_HEX = 16
