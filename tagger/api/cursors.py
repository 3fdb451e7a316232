"""Opaque page cursors. A listing cursor is a :class:`~tagger.store.Keyset` (continuing
exactly after the last row shown); a ranked result's cursor is an offset into the ranking,
bound to the query it came from so it cannot be replayed against another one.

Cursors are base64url JSON: opaque to clients (they may change shape between versions) but
not secret, so they are not signed.
"""

from __future__ import annotations

import base64
import hashlib
import json

from pydantic import BaseModel, ValidationError

from tagger.store import Keyset


class BadCursor(ValueError):
    """A cursor this server did not make, or made for another query."""


class _Offset(BaseModel):
    offset: int
    query: str


def _encode(model: BaseModel) -> str:
    return base64.urlsafe_b64encode(model.model_dump_json().encode()).decode().rstrip("=")


def _decode(cursor: str) -> object:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("not a cursor this server made") from exc


def keyset_cursor(key: Keyset | None) -> str | None:
    return None if key is None else _encode(key)


def read_keyset(cursor: str | None) -> Keyset | None:
    if not cursor:
        return None
    try:
        return Keyset.model_validate(_decode(cursor))
    except ValidationError as exc:
        raise BadCursor("not a listing cursor") from exc


def query_fingerprint(*parts: object) -> str:
    """A short digest of what a ranked query asked, so its cursor only continues it."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def offset_cursor(offset: int, query: str) -> str:
    return _encode(_Offset(offset=offset, query=query))


def read_offset(cursor: str | None, query: str) -> int:
    if not cursor:
        return 0
    try:
        position = _Offset.model_validate(_decode(cursor))
    except ValidationError as exc:
        raise BadCursor("not a ranked-results cursor") from exc
    if position.query != query or position.offset < 0:
        raise BadCursor("this cursor belongs to another query")
    return position.offset
