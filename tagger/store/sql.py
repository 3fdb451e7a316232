"""The SQL result store: SQLite for one machine, PostgreSQL for a fleet, one code path.

Only two dialects are supported, because upserts (``INSERT … ON CONFLICT``) are written with
each dialect's own insert construct; both share every other statement. Writes are batched
(one ``executemany`` per table and call) and each call is one transaction, so a worker saving a
batch of results never leaves a photo with half of its old tags.

SQLite gets WAL journaling (readers never block the writer), a busy timeout (a second writer
waits instead of failing with "database is locked") and ``BEGIN IMMEDIATE`` for write
transactions (a writer takes the lock up front, so it never has to upgrade a read snapshot,
which SQLite refuses without waiting).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    Table,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from tagger.config import Settings
from tagger.errors import StoreUnavailable, transient_codes
from tagger.schemas import ClassScore, JobCounts, Safety, Status, Tag, TagResult
from tagger.store import browsing
from tagger.store.base import (
    CardPage,
    Facets,
    Keyset,
    Match,
    PhotoState,
    SearchFilters,
    SearchHit,
    normalise_tag,
)
from tagger.store.schema import migrate
from tagger.store.sqlite_driver import dbapi as sqlite_dbapi
from tagger.store.sqlite_driver import load_vector_extension
from tagger.store.tables import JOB_ITEM_STATES, cursors, job_items, photos
from tagger.store.tables import tags as tag_index
from tagger.store.vectors import IndexStats, index_for

_IN_CHUNK = 500
"""Refs per ``IN (…)`` list; far below SQLite's and PostgreSQL's bound-parameter limits."""

_TRANSIENT: frozenset[str] = transient_codes()

_SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "tagger_write"

_T = TypeVar("_T")


def engine_url(url: str) -> URL:
    """Parse a store URL; plain ``postgresql://`` / ``postgres://`` (the libpq form most
    platforms hand out) means the psycopg 3 driver tagger ships with."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(
            f"unsupported store database {parsed.get_backend_name()!r}; use sqlite or postgresql"
        )
    return parsed


def _chunks(items: Sequence[_T], size: int = _IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (a persistent, per-file setting) unless it already is.

    The switch needs an exclusive lock and SQLite reports a conflicting one at once instead of
    waiting for the busy timeout, so two processes opening a new database together would
    fail; retry within the busy timeout instead.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except cursor.connection.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    load_vector_extension(dbapi_connection)
    # Hand transaction control to SQLAlchemy (the "begin" listener), instead of the sqlite3
    # module's implicit BEGIN before DML and autocommitted SELECTs.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        _sqlite_enable_wal(cursor)
        # In WAL mode NORMAL survives application crashes; only a power cut may lose the last
        # commits, which a re-run re-tags.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    mode = "IMMEDIATE" if connection.get_execution_options().get(_WRITE_OPTION) else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")


def _index_rows(result: TagResult) -> list[dict[str, Any]]:
    """The ``tags`` rows of one result: class labels and WordNet ids, friendly tags, and every
    parent with the best score of the friendly tags that have it."""
    best: dict[tuple[str, str], dict[str, Any]] = {}

    def put(kind: str, name: str, score: float, parents: list[str] | None = None) -> None:
        tag = normalise_tag(name)
        if not tag:
            return
        row = best.get((kind, tag))
        if row is None:
            best[(kind, tag)] = {
                "ref": result.ref,
                "kind": kind,
                "tag": tag,
                "score": score,
                "parents": parents,
            }
            return
        row["score"] = max(row["score"], score)
        if parents is not None:
            row["parents"] = list(dict.fromkeys([*(row["parents"] or []), *parents]))

    for cls in result.classes:
        put("class", cls.label, cls.score)
        put("class", cls.wnid, cls.score)
    for friendly in result.tags:
        parents = [p for p in dict.fromkeys(normalise_tag(p) for p in friendly.parents) if p]
        put("friendly", friendly.name, friendly.score, parents)
        for parent in parents:
            put("parent", parent, friendly.score)
    return list(best.values())


_SIMILAR_PAGE = 2000
_CANDIDATES = 200
"""Candidates asked of the vector index for a top 10: the exact top 10 is among them in 99.5 %
of queries on the SimHash index (``tagger bench-search`` measures recall on both backends)."""
_EXACT_BELOW = 20_000
"""Below this many photos meeting a filter, scoring them all exactly is faster than asking the
index for ever more candidates (20 000 float16 signatures are one 80 MB read and a product)."""


def _looked_up_tagged() -> ColumnElement[bool]:
    """``status = 'tagged'`` for statements that reach photos by their key.

    Without statistics SQLite prefers the status index (nearly every photo is "tagged") to the
    primary key, and scans all photos: 140-170 ms instead of 2-10 for a few hundred or thousand
    refs of 100 000. An expression on the column keeps every index off it.
    """
    return photos.c.status.concat("") == Status.TAGGED.value


def _conditions(filters: SearchFilters) -> list[ColumnElement[bool]]:
    """SQL conditions on ``photos`` for the filters: every required tag present, the person
    count within bounds (no count means none), safety at most ``max_nsfw`` (unscored photos
    are left out of a safe search)."""
    clauses: list[ColumnElement[bool]] = [
        exists().where(tag_index.c.ref == photos.c.ref, tag_index.c.tag == name)
        for name in filters.required()
    ]
    people = func.coalesce(photos.c.counts["person"].as_integer(), 0)
    if filters.min_people is not None:
        clauses.append(people >= filters.min_people)
    if filters.max_people is not None:
        clauses.append(people <= filters.max_people)
    if filters.max_nsfw is not None:
        clauses += [photos.c.nsfw.is_not(None), photos.c.nsfw <= filters.max_nsfw]
    return clauses


def _packed(vector: Sequence[float] | None) -> bytes | None:
    """A signature as little-endian float16: 3.9 kB a photo, and what a vector index holds."""
    return None if vector is None else np.asarray(vector, "<f2").tobytes()


def _unpacked(data: bytes | None) -> list[float] | None:
    return None if data is None else _vectors(data).tolist()


def _vectors(data: bytes) -> npt.NDArray[np.float32]:
    """Packed float16 signatures (one or many, back to back) as float32 for arithmetic."""
    return np.frombuffer(data, "<f2").astype(np.float32)


def _dumped(items: Sequence[BaseModel] | None) -> list[Any] | None:
    return None if items is None else [item.model_dump(mode="json") for item in items]


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """The engine every connection to a store goes through: on SQLite the driver that can load
    sqlite-vec, the extension loaded, WAL and ``BEGIN IMMEDIATE`` for writers."""
    parsed = engine_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not parsed.query.get("uri"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, echo=echo, module=sqlite_dbapi())
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    # Workers live for days; a server restart must not surface as a failed batch.
    return create_engine(parsed, echo=echo, pool_pre_ping=True)


class SqlTagStore:
    """A :class:`~tagger.store.base.TagStore` on SQLite or PostgreSQL via SQLAlchemy Core.

    Safe to share between threads (each call checks a connection out of the pool); each
    process makes its own, since engines must not cross a fork.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self._url = engine_url(url)
        self._dialect = self._url.get_backend_name()
        self._engine = make_engine(self._url, echo=echo)
        self._vectors = index_for(self._dialect)
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlTagStore:
        return cls(settings.store_url)

    @property
    def url(self) -> str:
        """The database URL with any password masked, fit for logs and CLI output."""
        return self._url.render_as_string(hide_password=True)

    # -- plumbing -------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        """Migrate the database to the current schema on first use, once per store, safely
        across processes (:mod:`tagger.store.schema`)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    migrate(conn)
            self._schema_ready = True

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        """One transaction; a database that cannot be reached (refused, restarting, locked
        past the busy timeout, connection dropped mid-transaction) surfaces as the typed,
        transient :class:`StoreUnavailable`, so callers wait for it instead of losing work."""
        try:
            self._ensure_schema()
            with self._engine.connect() as conn:
                if write:
                    conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    yield conn
        except (OperationalError, InterfaceError) as exc:
            cause = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
            raise StoreUnavailable(f"store {self.url} unreachable ({cause})") from exc

    def ping(self) -> None:
        """One round trip to the database, for readiness probes; raises
        :class:`StoreUnavailable` when it cannot be reached."""
        with self._transaction(write=False) as conn:
            conn.execute(select(1))

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- results --------------------------------------------------------------------------

    def save(self, results: Sequence[TagResult]) -> None:
        """Upsert the photos and replace their tags, all in one transaction.

        A ref given twice keeps its last result.
        """
        latest = {result.ref: result for result in results}
        if not latest:
            return
        now = datetime.now(UTC)
        packed = {r.ref: _packed(r.signature) for r in latest.values()}
        photo_rows = [
            {
                "ref": r.ref,
                "etag": r.etag,
                "status": r.status.value,
                "reason": r.reason,
                "error": r.error,
                "model_version": r.model_version,
                "width": r.width,
                "height": r.height,
                "classes": [c.model_dump(mode="json") for c in r.classes],
                "tagged_at": r.tagged_at,
                "updated_at": now,
                "analyzers": {n: run.model_dump(mode="json") for n, run in r.analyzers.items()}
                or None,
                "objects": _dumped(r.objects),
                "counts": r.counts,
                "colours": r.colours.model_dump(mode="json") if r.colours else None,
                "nsfw": r.nsfw,
                "text": r.text,
                "signature": packed[r.ref],
            }
            for r in latest.values()
        ]
        # Only tagged photos are searchable, so only they have rows in the tag index: a
        # search need not look at photos unless a filter asks about them.
        tag_rows = [
            row for r in latest.values() if r.status is Status.TAGGED for row in _index_rows(r)
        ]
        upsert = self._insert(photos)
        upsert = upsert.on_conflict_do_update(
            index_elements=[photos.c.ref],
            set_={c.name: upsert.excluded[c.name] for c in photos.c if c.name != "ref"},
        )
        refs = list(latest)
        with self._transaction(write=True) as conn:
            indexed = self._signatures(conn, refs, SearchFilters())
            conn.execute(upsert, photo_rows)
            for chunk in _chunks(refs):
                conn.execute(delete(tag_index).where(tag_index.c.ref.in_(chunk)))
            if tag_rows:
                conn.execute(insert(tag_index), tag_rows)
            vectors = {
                r.ref: np.asarray(r.signature, np.float32)
                for r in latest.values()
                if r.signature is not None and r.status is Status.TAGGED
            }
            # a re-tag that kept the classifier (a new label set) keeps the signature: its
            # index entry stays, and the index codes are not computed again
            changed = {
                ref: vector for ref, vector in vectors.items() if indexed.get(ref) != packed[ref]
            }
            self._vectors.put(conn, changed)
            gone = [ref for ref in refs if ref not in vectors]
            if gone:
                self._vectors.remove(conn, gone)

    def get(self, ref: str) -> TagResult | None:
        return self.get_many([ref]).get(ref)

    def get_many(self, refs: Sequence[str]) -> dict[str, TagResult]:
        """Results of those ``refs`` the store has, in the order asked for."""
        wanted = list(dict.fromkeys(refs))
        found: dict[str, TagResult] = {}
        with self._transaction(write=False) as conn:
            for chunk in _chunks(wanted):
                rows = conn.execute(select(photos).where(photos.c.ref.in_(chunk))).all()
                found.update((r.ref, r) for r in self._results(conn, rows))
        return {ref: found[ref] for ref in wanted if ref in found}

    def _results(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[TagResult]:
        """Rebuild results from ``photos`` rows plus their friendly tags (with parents)."""
        friendly: dict[str, list[Tag]] = {row.ref: [] for row in rows}
        if friendly:
            tag_rows = conn.execute(
                select(tag_index.c.ref, tag_index.c.tag, tag_index.c.score, tag_index.c.parents)
                .where(tag_index.c.ref.in_(list(friendly)), tag_index.c.kind == "friendly")
                .order_by(tag_index.c.ref, tag_index.c.score.desc(), tag_index.c.tag)
            )
            for t in tag_rows:
                friendly[t.ref].append(Tag(name=t.tag, score=t.score, parents=t.parents or []))
        return [
            TagResult(
                ref=row.ref,
                status=Status(row.status),
                reason=row.reason,
                error=row.error,
                # a property of the error kind, so it needs no column of its own
                transient=row.error in _TRANSIENT,
                model_version=row.model_version,
                etag=row.etag,
                width=row.width,
                height=row.height,
                classes=[ClassScore.model_validate(c) for c in row.classes],
                tags=friendly[row.ref],
                objects=row.objects,
                counts=row.counts,
                colours=row.colours,
                safety=None if row.nsfw is None else Safety(nsfw=row.nsfw),
                text=row.text,
                signature=_unpacked(row.signature),
                analyzers=row.analyzers or {},
                tagged_at=row.tagged_at,
            )
            for row in rows
        ]

    def search(
        self, tags: Sequence[str], limit: int = 50, filters: SearchFilters | None = None
    ) -> list[SearchHit]:
        """Tagged photos having every one of ``tags`` and meeting ``filters``, ranked by the sum
        of the scores of the searched tags and colours.

        A tag matches a friendly tag, a parent (``animal``) or a class label or WordNet id;
        where one name matches several kinds, its best score counts. One SQL statement ranks
        the photos; each hit lists its display tags and, in ``why``, the score of each searched
        tag and colour it has.
        """
        filters = filters or SearchFilters()
        colours = {normalise_tag(name) for name in filters.colours}
        names = list(
            dict.fromkeys([*(n for n in map(normalise_tag, tags) if n), *filters.required()])
        )
        if not names:
            raise ValueError("search needs at least one non-empty tag")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        t = tag_index
        with self._transaction(write=False) as conn:
            hits_stmt = self._ranked(conn, names, filters, limit)
            ranked = [(float(row.score), row.ref) for row in conn.execute(hits_stmt)]
            hits = self._hits(conn, ranked)
            matched = conn.execute(
                select(t.c.ref, t.c.tag, func.max(t.c.score).label("score"))
                .where(t.c.ref.in_([ref for _, ref in ranked]), t.c.tag.in_(names))
                .group_by(t.c.ref, t.c.tag)
            ).all()
        why: dict[str, list[Match]] = {}
        for row in sorted(matched, key=lambda r: names.index(r.tag)):
            kind: Literal["tag", "colour"] = "colour" if row.tag in colours else "tag"
            why.setdefault(row.ref, []).append(
                Match(kind=kind, name=row.tag, score=round(float(row.score), 4))
            )
        return [hit.model_copy(update={"why": why.get(hit.ref, [])}) for hit in hits]

    def _ranked(
        self, conn: Connection, names: Sequence[str], filters: SearchFilters, limit: int
    ) -> Select[tuple[str, float]]:
        """The statement ranking photos that have every one of ``names``.

        It starts from the rarest name's rows (the index on (tag, ref, score) covers them)
        and looks each of the other names up by photo, so the cost follows the rarest tag,
        not the most common one: "dog on a beach" reads the beach photos once each.
        """
        t = tag_index
        counts: dict[str, int] = dict(
            conn.execute(
                select(t.c.tag, func.count()).where(t.c.tag.in_(names)).group_by(t.c.tag)
            ).all()
        )
        rarest = min(names, key=lambda name: counts.get(name, 0))
        driver = (
            select(t.c.ref, func.max(t.c.score).label("score"))
            .where(t.c.tag == rarest)
            .group_by(t.c.ref)
            .subquery("driver")
        )
        total: ColumnElement[float] = driver.c.score
        for name in names:
            if name != rarest:
                other = t.alias()
                total = total + (
                    select(func.max(other.c.score))
                    .where(other.c.ref == driver.c.ref, other.c.tag == name)
                    .scalar_subquery()
                )
        # A photo lacking another name has no score for it, so its total is NULL. Testing that
        # instead of EXISTS keeps PostgreSQL from hashing every photo of a common tag ("grey":
        # 65 % of photos) into a semi-join: 110 ms -> a probe per candidate.
        conditions = _conditions(filters.model_copy(update={"tags": (), "colours": ()}))
        ranked = select(driver.c.ref, total.label("score")).where(total.is_not(None))
        if conditions:
            ranked = ranked.select_from(driver.join(photos, photos.c.ref == driver.c.ref)).where(
                _looked_up_tagged(), *conditions
            )
        return ranked.order_by(total.desc(), driver.c.ref).limit(limit)

    def _hits(self, conn: Connection, ranked: Sequence[tuple[float, str]]) -> list[SearchHit]:
        """Hits in the given order, each with its display tags: friendly tags best first, then
        their parents (the order of ``TagResult.tag_names()``)."""
        refs = [ref for _, ref in ranked]
        shown: dict[str, tuple[dict[str, None], list[str]]] = {ref: ({}, []) for ref in refs}
        t = tag_index
        for chunk in _chunks(refs):
            rows = conn.execute(
                select(t.c.ref, t.c.tag, t.c.parents)
                .where(t.c.ref.in_(chunk), t.c.kind == "friendly")
                .order_by(t.c.ref, t.c.score.desc(), t.c.tag)
            )
            for row in rows:
                friendly, parents = shown[row.ref]
                friendly.setdefault(row.tag, None)
                parents.extend(row.parents or [])
        return [
            SearchHit(
                ref=ref,
                score=score,
                tags=list(dict.fromkeys([*shown[ref][0], *shown[ref][1]])),
            )
            for score, ref in ranked
        ]

    def flagged(
        self, threshold: float, limit: int = 100, after: Keyset | None = None
    ) -> list[TagResult]:
        """Tagged photos whose safety score reaches ``threshold``, most likely first."""
        where = [photos.c.status == Status.TAGGED.value, photos.c.nsfw >= threshold]
        if (position := browsing.after_score(after)) is not None:
            where.append(position)
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(photos)
                .where(*where)
                .order_by(photos.c.nsfw.desc(), photos.c.ref)
                .limit(limit)
            ).all()
            return self._results(conn, rows)

    def similar(
        self, ref: str, k: int = 20, filters: SearchFilters | None = None
    ) -> list[SearchHit]:
        """The ``k`` tagged photos whose signatures are nearest to ``ref``'s, best first."""
        found = self.signatures([ref])
        if ref not in found:
            raise ValueError(f"{ref} has no signature: tag it (with the classify analyser) first")
        return self.nearest(found[ref], k=k, filters=filters, exclude=[ref])

    def signatures(self, refs: Sequence[str]) -> dict[str, list[float]]:
        with self._transaction(write=False) as conn:
            return {
                ref: _vectors(data).tolist()
                for ref, data in self._signatures(conn, refs, SearchFilters()).items()
            }

    def existing_tags(self, names: Sequence[str]) -> set[str]:
        wanted = [name for name in map(normalise_tag, names) if name]
        if not wanted:
            return set()
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(tag_index.c.tag).where(tag_index.c.tag.in_(wanted)).distinct()
            )
            return {row.tag for row in rows}

    def _signatures(
        self, conn: Connection, refs: Sequence[str], filters: SearchFilters
    ) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for chunk in _chunks(list(refs)):
            rows = conn.execute(
                select(photos.c.ref, photos.c.signature).where(
                    photos.c.ref.in_(chunk),
                    _looked_up_tagged(),
                    photos.c.signature.is_not(None),
                    *_conditions(filters),
                )
            )
            found.update((row.ref, row.signature) for row in rows)
        return found

    def nearest(
        self,
        vector: npt.ArrayLike,
        k: int = 20,
        filters: SearchFilters | None = None,
        exclude: Sequence[str] = (),
    ) -> list[SearchHit]:
        """The ``k`` tagged photos nearest to ``vector`` that meet ``filters``, best first.

        The vector index proposes candidates (at least ``_CANDIDATES``, or ten per wanted
        hit); their stored signatures are scored exactly and filtered in SQL. When a filter
        leaves too few, the index is asked for four times as many, and past
        ``_EXACT_BELOW`` matching photos a selective filter is answered by scoring exactly
        the photos that meet it, which is then cheaper than the index.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        filters = filters or SearchFilters()
        query = np.asarray(vector, np.float32)
        skip = set(exclude)
        with self._transaction(write=False) as conn:
            selective = bool(filters.required()) or filters.min_people or filters.max_people
            if selective and self._count_at_most(conn, filters, _EXACT_BELOW) < _EXACT_BELOW:
                best = self._exact(conn, query, k, filters, skip)
            else:
                want = max(_CANDIDATES, 10 * k) + len(skip)
                while True:
                    refs = self._vectors.candidates(conn, query, want)
                    scored = self._scored(conn, query, refs, filters, skip)
                    if len(scored) >= k or len(refs) < want:
                        best = heapq.nlargest(k, scored)
                        break
                    if want >= _EXACT_BELOW:
                        best = self._exact(conn, query, k, filters, skip)
                        break
                    want *= 4
            hits = self._hits(conn, [(round(score, 6), ref) for score, ref in best])
        return [
            hit.model_copy(update={"why": [Match(kind="similarity", name="", score=hit.score)]})
            for hit in hits
        ]

    def _count_at_most(self, conn: Connection, filters: SearchFilters, cap: int) -> int:
        matching = (
            select(photos.c.ref)
            .where(photos.c.status == Status.TAGGED.value, *_conditions(filters))
            .limit(cap)
            .subquery()
        )
        return int(conn.execute(select(func.count()).select_from(matching)).scalar_one())

    def _scored(
        self,
        conn: Connection,
        query: npt.NDArray[np.float32],
        refs: Sequence[str],
        filters: SearchFilters,
        skip: set[str],
    ) -> list[tuple[float, str]]:
        found = self._signatures(conn, [ref for ref in refs if ref not in skip], filters)
        same = {ref: data for ref, data in found.items() if len(data) == 2 * len(query)}
        if not same:
            return []
        vectors = _vectors(b"".join(same.values())).reshape(len(same), -1)
        return list(zip((vectors @ query).tolist(), same, strict=True))

    def _exact(
        self,
        conn: Connection,
        query: npt.NDArray[np.float32],
        k: int,
        filters: SearchFilters,
        skip: set[str],
    ) -> list[tuple[float, str]]:
        """Every photo meeting ``filters`` scored, a page at a time, holding the best ``k``."""
        best: list[tuple[float, str]] = []
        stmt = (
            select(photos.c.ref, photos.c.signature)
            .where(
                photos.c.status == Status.TAGGED.value,
                photos.c.signature.is_not(None),
                func.length(photos.c.signature) == 2 * len(query),
                *_conditions(filters),
            )
            .execution_options(yield_per=_SIMILAR_PAGE)
        )
        for page in conn.execute(stmt).partitions():
            rows = [row for row in page if row.ref not in skip]
            if not rows:
                continue
            vectors = _vectors(b"".join(row.signature for row in rows)).reshape(len(rows), -1)
            scores = vectors @ query
            best = heapq.nlargest(
                k, [*best, *zip(scores.tolist(), (row.ref for row in rows), strict=True)]
            )
        return best

    def failures(self, limit: int = 100, after: Keyset | None = None) -> list[TagResult]:
        where = [photos.c.status == Status.FAILED.value]
        if (position := browsing.after_time(after)) is not None:
            where.append(position)
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(photos)
                .where(*where)
                .order_by(photos.c.tagged_at.desc(), photos.c.ref)
                .limit(limit)
            ).all()
            return self._results(conn, rows)

    def recent(
        self, limit: int = 50, filters: SearchFilters | None = None, after: Keyset | None = None
    ) -> CardPage:
        """Tagged photos meeting ``filters``, most recently tagged first, with their display
        tags (the order of :meth:`search` hits)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        conditions = _conditions(filters or SearchFilters())
        with self._transaction(write=False) as conn:
            rows = conn.execute(browsing.recent_statement(conditions, after, limit)).all()
            hits = self._hits(conn, [(0.0, row.ref) for row in rows[:limit]])
        return browsing.card_page(rows, {hit.ref: hit.tags for hit in hits}, limit)

    def facets(self, limit: int = 30, safety_threshold: float = 0.8) -> Facets:
        with self._transaction(write=False) as conn:
            return browsing.facets(conn, limit, safety_threshold)

    def known(self, refs: Sequence[str]) -> dict[str, PhotoState]:
        """One indexed lookup per 500 refs, so the backfill can filter a whole listing page."""
        wanted = list(dict.fromkeys(refs))
        states: dict[str, PhotoState] = {}
        cols = (
            photos.c.ref,
            photos.c.status,
            photos.c.etag,
            photos.c.model_version,
            photos.c.analyzers,
        )
        with self._transaction(write=False) as conn:
            for chunk in _chunks(wanted):
                for row in conn.execute(select(*cols).where(photos.c.ref.in_(chunk))):
                    states[row.ref] = PhotoState(
                        status=Status(row.status),
                        etag=row.etag,
                        model_version=row.model_version,
                        analyzers={n: run["version"] for n, run in (row.analyzers or {}).items()},
                    )
        return states

    def counts(self) -> dict[str, int]:
        result = {status.value: 0 for status in Status}
        with self._transaction(write=False) as conn:
            for status, n in conn.execute(
                select(photos.c.status, func.count()).group_by(photos.c.status)
            ):
                result[status] = int(n)
        return result

    # -- jobs -----------------------------------------------------------------------------

    def add_job(self, job_id: str, refs: Sequence[str]) -> None:
        """Register ``refs`` as queued; refs already in the job keep their state, so a job
        can be added page by page while workers are already marking items."""
        if not job_id:
            raise ValueError("empty job id")
        now = datetime.now(UTC)
        rows = [
            {"job_id": job_id, "ref": ref, "state": "queued", "updated_at": now}
            for ref in dict.fromkeys(refs)
        ]
        if not rows:
            return
        stmt = self._insert(job_items).on_conflict_do_nothing(
            index_elements=[job_items.c.job_id, job_items.c.ref]
        )
        with self._transaction(write=True) as conn:
            conn.execute(stmt, rows)

    def mark_job_items(self, job_id: str, states: Mapping[str, str]) -> None:
        """Set item states. ``done`` is final: a redelivered task that finds the photo
        already tagged reports ``skipped``, which must not hide that it was done."""
        bad = {state for state in states.values() if state not in JOB_ITEM_STATES}
        if bad:
            raise ValueError(f"unknown job item state(s) {sorted(bad)}; use {JOB_ITEM_STATES}")
        if not states:
            return
        now = datetime.now(UTC)
        rows = [
            {"job_id": job_id, "ref": ref, "state": state, "updated_at": now}
            for ref, state in states.items()
        ]
        upsert = self._insert(job_items)
        upsert = upsert.on_conflict_do_update(
            index_elements=[job_items.c.job_id, job_items.c.ref],
            set_={"state": upsert.excluded.state, "updated_at": upsert.excluded.updated_at},
            where=job_items.c.state != "done",
        )
        with self._transaction(write=True) as conn:
            conn.execute(upsert, rows)

    def job_counts(self, job_id: str) -> JobCounts:
        """Progress of ``job_id``; an unknown job counts as empty (total 0)."""
        per_state = dict.fromkeys(JOB_ITEM_STATES, 0)
        with self._transaction(write=False) as conn:
            for state, n in conn.execute(
                select(job_items.c.state, func.count())
                .where(job_items.c.job_id == job_id)
                .group_by(job_items.c.state)
            ):
                per_state[state] = int(n)
        return JobCounts(total=sum(per_state.values()), **per_state)

    # -- cursors --------------------------------------------------------------------------

    def get_cursor(self, name: str) -> str | None:
        with self._transaction(write=False) as conn:
            value = conn.execute(select(cursors.c.value).where(cursors.c.name == name)).scalar()
        return None if value is None else str(value)

    def set_cursor(self, name: str, value: str | None) -> None:
        with self._transaction(write=True) as conn:
            if value is None:
                conn.execute(delete(cursors).where(cursors.c.name == name))
                return
            upsert = self._insert(cursors)
            upsert = upsert.on_conflict_do_update(
                index_elements=[cursors.c.name],
                set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
            )
            conn.execute(upsert, {"name": name, "value": value, "updated_at": datetime.now(UTC)})

    # -- lifecycle ------------------------------------------------------------------------

    def index_stats(self) -> IndexStats:
        """How many photos the vector index holds and its size on disk."""
        with self._transaction(write=False) as conn:
            return self._vectors.stats(conn)

    def close(self) -> None:
        """Close pooled connections; the store reconnects if used again."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
