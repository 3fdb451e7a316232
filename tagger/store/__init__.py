"""Where results, job progress and resumable cursors are kept (see :mod:`tagger.store.sql`)."""

from tagger.store.base import (
    Card,
    CardPage,
    FacetCount,
    Facets,
    JobItemState,
    Keyset,
    Match,
    PhotoState,
    SearchFilters,
    SearchHit,
    TagKind,
    TagStore,
    normalise_tag,
)
from tagger.store.sql import SqlTagStore, engine_url, make_engine
from tagger.store.vectors import IndexStats

__all__ = [
    "Card",
    "CardPage",
    "FacetCount",
    "Facets",
    "IndexStats",
    "JobItemState",
    "Keyset",
    "Match",
    "PhotoState",
    "SearchFilters",
    "SearchHit",
    "SqlTagStore",
    "TagKind",
    "TagStore",
    "engine_url",
    "make_engine",
    "normalise_tag",
]
