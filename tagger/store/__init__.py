"""Where results, job progress and resumable cursors are kept (see :mod:`tagger.store.sql`)."""

from tagger.store.base import JobItemState, PhotoState, SearchHit, TagKind, TagStore, normalise_tag
from tagger.store.sql import SqlTagStore, engine_url

__all__ = [
    "JobItemState",
    "PhotoState",
    "SearchHit",
    "SqlTagStore",
    "TagKind",
    "TagStore",
    "engine_url",
    "normalise_tag",
]
