"""Listings for people browsing the store: recent photos, failures and flagged photos page by
page, and the facets a gallery offers as filters.

Pages continue from a :class:`~tagger.store.base.Keyset` (the sort value and ref of the last
row) rather than an offset, so page 500 costs what page 1 costs and photos tagged while someone
pages do not shift what they see. Each listing's order ends with the ref, which makes it total.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, Text, and_, case, cast, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from tagger.schemas import Status
from tagger.store.base import Card, CardPage, FacetCount, Facets, Keyset
from tagger.store.tables import photos
from tagger.store.tables import tags as tag_index

COLOUR_PARENT = "colour"
"""The parent the colours analyser gives its colour tags; the facets list them apart."""

_PARENT_LOOKUPS = 500
"""The most common tags whose parents are looked up to tell colours apart."""


def after_time(after: Keyset | None) -> ColumnElement[bool] | None:
    """Rows after ``after`` in the order (tagged_at desc, ref asc)."""
    if after is None:
        return None
    at = datetime.fromisoformat(str(after.value))
    return or_(photos.c.tagged_at < at, and_(photos.c.tagged_at == at, photos.c.ref > after.ref))


def after_score(after: Keyset | None) -> ColumnElement[bool] | None:
    """Rows after ``after`` in the order (nsfw desc, ref asc)."""
    if after is None:
        return None
    score = float(after.value)
    return or_(photos.c.nsfw < score, and_(photos.c.nsfw == score, photos.c.ref > after.ref))


def time_key(row: Any) -> Keyset:
    return Keyset(value=row.tagged_at.isoformat(), ref=row.ref)


def score_key(row: Any) -> Keyset:
    return Keyset(value=float(row.nsfw), ref=row.ref)


def recent_statement(
    conditions: Sequence[ColumnElement[bool]], after: Keyset | None, limit: int
) -> Select[Any]:
    """Tagged photos, newest first; the (status, tagged_at) index serves the order."""
    where = [photos.c.status == Status.TAGGED.value, *conditions]
    if (position := after_time(after)) is not None:
        where.append(position)
    return (
        select(photos.c.ref, photos.c.width, photos.c.height, photos.c.nsfw, photos.c.tagged_at)
        .where(*where)
        .order_by(photos.c.tagged_at.desc(), photos.c.ref)
        .limit(limit + 1)
    )


def card_page(rows: Sequence[Any], display_tags: dict[str, list[str]], limit: int) -> CardPage:
    """The first ``limit`` rows as cards; one more row than asked for says a next page exists."""
    shown = rows[:limit]
    cards = [
        Card(
            ref=row.ref,
            tags=display_tags.get(row.ref, []),
            width=row.width,
            height=row.height,
            nsfw=row.nsfw,
            tagged_at=row.tagged_at,
        )
        for row in shown
    ]
    more = len(rows) > limit and shown
    return CardPage(cards=cards, next=time_key(shown[-1]) if more else None)


def facets(conn: Connection, limit: int, safety_threshold: float) -> Facets:
    """Counts over tagged photos. Tags and colours come from the friendly rows of the tag
    index; a tag is a colour when its parents name :data:`COLOUR_PARENT`."""
    t = tag_index
    tagged = photos.c.status == Status.TAGGED.value
    total = conn.execute(select(func.count()).where(tagged)).scalar_one()
    counted = conn.execute(
        select(t.c.tag, func.count().label("n"))
        .where(t.c.kind == "friendly")
        .group_by(t.c.tag)
        .order_by(func.count().desc(), t.c.tag)
    ).all()
    # One row per tag tells its parents: the first by ref, found through the (tag, ref) index.
    candidates = [row.tag for row in counted[:_PARENT_LOOKUPS]]
    first = (
        select(t.c.tag, func.min(t.c.ref).label("ref"))
        .where(t.c.kind == "friendly", t.c.tag.in_(candidates))
        .group_by(t.c.tag)
        .subquery()
    )
    colours = {
        row.tag
        for row in conn.execute(
            select(t.c.tag, t.c.parents)
            .join(first, and_(t.c.tag == first.c.tag, t.c.ref == first.c.ref))
            .where(t.c.kind == "friendly")
        )
        if COLOUR_PARENT in (row.parents or [])
    }
    tag_counts = [FacetCount(name=row.tag, count=int(row.n)) for row in counted]
    people = func.coalesce(photos.c.counts["person"].as_integer(), 0)
    bucket = case((people >= 3, "3+"), else_=cast(people, Text))
    by_people: dict[str, int] = dict(
        conn.execute(select(bucket, func.count()).where(tagged).group_by(bucket)).all()
    )
    safety = case(
        (photos.c.nsfw.is_(None), "unscored"),
        (photos.c.nsfw >= safety_threshold, "flagged"),
        else_="safe",
    )
    by_safety: dict[str, int] = dict(
        conn.execute(select(safety, func.count()).where(tagged).group_by(safety)).all()
    )
    return Facets(
        total=int(total),
        tags=[c for c in tag_counts if c.name not in colours][:limit],
        colours=[c for c in tag_counts if c.name in colours][:limit],
        people=[
            FacetCount(name=name, count=int(by_people[name]))
            for name in ("0", "1", "2", "3+")
            if by_people.get(name)
        ],
        safety=[
            FacetCount(name=name, count=int(by_safety[name]))
            for name in ("safe", "flagged", "unscored")
            if by_safety.get(name)
        ],
    )
