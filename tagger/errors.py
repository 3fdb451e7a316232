"""Typed failures, split by what a worker should do about them.

A *permanent* error (not an image, too large, 404, access denied) is recorded once with its
reason and never retried; a *transient* one (connection reset, timeout, S3 5xx or throttling)
is retried with backoff. Each error has a short machine-readable ``code`` that the store keeps
next to the human reason, so failures can be counted and filtered.
"""

from __future__ import annotations


class TaggerError(Exception):
    """Base class: a one-line reason that is safe to show and to store (no secrets, no URLs
    with credentials)."""

    code = "error"
    permanent = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentError(TaggerError):
    code = "permanent"
    permanent = True


class TransientError(TaggerError):
    code = "transient"
    permanent = False


class NotAnImage(PermanentError):
    code = "not_an_image"


class ImageTooLarge(PermanentError):
    code = "too_large"


class CorruptImage(PermanentError):
    code = "corrupt"


class EmptyInput(PermanentError):
    code = "empty"


class NotFound(PermanentError):
    code = "not_found"


class AccessDenied(PermanentError):
    code = "access_denied"


class RefusedReference(PermanentError):
    """The reference is well-formed but policy forbids it (private address, local path…)."""

    code = "refused"


class FetchFailed(TransientError):
    code = "fetch_failed"


class ModelError(PermanentError):
    """The model artifact is missing, tampered with or inconsistent."""

    code = "model"
