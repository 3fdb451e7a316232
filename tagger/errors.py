"""Typed failures, split by what a worker should do about them.

A *permanent* error (not an image, too large, truncated, 404, access denied, a refused or
invalid reference) is recorded once with its reason and never retried; a *transient* one
(connection reset, timeout, S3 5xx or throttling) is retried with backoff until the outage
patience runs out. Each error carries an :class:`ErrorCode`, the one list of machine-readable
failure kinds that the store keeps next to the human reason, so failures can be counted and
filtered and no module invents a code string of its own.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every failure kind a TagResult, a log line or an API answer may carry."""

    ERROR = "error"
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    NOT_AN_IMAGE = "not_an_image"
    TOO_LARGE = "too_large"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    EMPTY = "empty"
    NOT_FOUND = "not_found"
    ACCESS_DENIED = "access_denied"
    REFUSED = "refused"
    INVALID_REF = "invalid_ref"
    FETCH_FAILED = "fetch_failed"
    STORE_UNAVAILABLE = "store_unavailable"
    MODEL = "model"
    CONFIG = "config"
    MALFORMED_EVENT = "malformed_event"
    INTERNAL = "internal"
    # answers of the HTTP API (tagger serve) to a request rather than to a photo
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    INVALID_REQUEST = "invalid_request"
    BROKER_UNAVAILABLE = "broker_unavailable"


class TaggerError(Exception):
    """Base class: a one-line reason that is safe to show and to store (no secrets, no URLs
    with credentials)."""

    code: ErrorCode = ErrorCode.ERROR
    permanent = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentError(TaggerError):
    code = ErrorCode.PERMANENT
    permanent = True


class TransientError(TaggerError):
    code = ErrorCode.TRANSIENT
    permanent = False


class NotAnImage(PermanentError):
    code = ErrorCode.NOT_AN_IMAGE


class ImageTooLarge(PermanentError):
    code = ErrorCode.TOO_LARGE


class CorruptImage(PermanentError):
    code = ErrorCode.CORRUPT


class TruncatedImage(CorruptImage):
    """The data ends before the picture does, even when an end marker was appended: tags read
    from a grey-filled half photo are worse than an honest failure."""

    code = ErrorCode.TRUNCATED


class EmptyInput(PermanentError):
    code = ErrorCode.EMPTY


class NotFound(PermanentError):
    code = ErrorCode.NOT_FOUND


class AccessDenied(PermanentError):
    code = ErrorCode.ACCESS_DENIED


class RefusedReference(PermanentError):
    """The reference is well-formed but policy forbids it (private address, local path…)."""

    code = ErrorCode.REFUSED


class InvalidReference(PermanentError, ValueError):
    """The reference cannot name a photo at all (bad syntax, a path that loops); a ValueError
    too, so pydantic validation and callers catching ValueError see it."""

    code = ErrorCode.INVALID_REF


class FetchFailed(TransientError):
    code = ErrorCode.FETCH_FAILED


class StoreUnavailable(TransientError):
    """The result store cannot be reached; the work waits for it rather than being lost."""

    code = ErrorCode.STORE_UNAVAILABLE


class ModelError(PermanentError):
    """The model artifact is missing, tampered with or inconsistent."""

    code = ErrorCode.MODEL


class ConfigError(PermanentError):
    """A setting names something that does not exist (an unknown analyser) or does not fit."""

    code = ErrorCode.CONFIG


def transient_codes() -> frozenset[ErrorCode]:
    """Codes of the failures that may go away on retry: a backfill retries those by default,
    while a permanent failure (not an image, 404) is re-run only with ``--retry-failed``."""
    codes: set[ErrorCode] = set()
    stack: list[type[TaggerError]] = [TaggerError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not cls.permanent:
            codes.add(cls.code)
    return frozenset(codes)
