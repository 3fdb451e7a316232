"""The SQL schema, written once in SQLAlchemy Core so SQLite and PostgreSQL get the same tables.

The schema is brought up to date on first use by the Alembic migrations in
``tagger/store/migrations`` (:mod:`tagger.store.schema`); this ``metadata`` is their target, and
a test checks that the migrated database and it agree on SQLite and PostgreSQL. Constraint names
follow a fixed convention so migrations can refer to them.

``photos`` holds one row per photo with its full result (``classes`` as JSON, because they are
only ever read back whole). ``tags`` is the search index derived from it: one row per photo and
tag, where ``kind`` says whether the tag is a model class (its label or WordNet id), a friendly
tag, or a parent of friendly tags, so a search for ``animal`` finds a tabby cat.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB

from tagger.schemas import Status
from tagger.store.base import JobItemState, TagKind

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no timezone type and would silently drop the offset (and then compare local and
    UTC times as strings); storing naive UTC there and ``timestamptz`` in PostgreSQL gives
    both the same ordering and the same values back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; tagger stores aware UTC timestamps")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_Json = JSON().with_variant(JSONB(), "postgresql")

PHOTO_STATUSES: tuple[str, ...] = tuple(status.value for status in Status)
TAG_KINDS: tuple[str, ...] = get_args(TagKind)
JOB_ITEM_STATES: tuple[str, ...] = get_args(JobItemState)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


photos = Table(
    "photos",
    metadata,
    Column("ref", Text, primary_key=True),
    Column("etag", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("error", String(64), nullable=True, comment="machine-readable failure code"),
    Column("model_version", String(128), nullable=True),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("classes", _Json, nullable=False, comment="list of ClassScore dicts"),
    Column("tagged_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("analyzers", _Json, nullable=True, comment="name -> AnalyzerRun dict"),
    Column("objects", _Json, nullable=True, comment="list of DetectedObject dicts"),
    Column("counts", _Json, nullable=True, comment="label -> count"),
    Column("colours", _Json, nullable=True, comment="Colours dict"),
    Column("nsfw", Float, nullable=True, comment="safety score"),
    Column("text", _Json, nullable=True, comment="words read"),
    Column("signature", LargeBinary, nullable=True, comment="float16 signature vector"),
    CheckConstraint(_one_of("status", PHOTO_STATUSES), name="status"),
    # status leads, so counts per status use it; tagged_at serves "most recent failures".
    Index("ix_photos_status_tagged_at", "status", "tagged_at"),
    # "what did model X tag" — for re-tagging with a newer model.
    Index("ix_photos_model_version", "model_version"),
    # "flagged photos, most likely first" starts from the score.
    Index("ix_photos_nsfw", "nsfw"),
)

tags = Table(
    "tags",
    metadata,
    Column("ref", Text, ForeignKey("photos.ref", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("tag", Text, primary_key=True),
    Column("score", Float, nullable=False),
    Column(
        "parents",
        _Json,
        nullable=True,
        comment="for kind='friendly': the tag's parents, in order, so get() can rebuild it",
    ),
    CheckConstraint(_one_of("kind", TAG_KINDS), name="kind"),
    # "photos having all of these tags, ranked by score" starts from the rarest tag's rows and
    # looks the others up by photo: (tag, ref, score) covers both without touching the table.
    Index("ix_tags_tag_ref_score", "tag", "ref", "score"),
)

# Job progress: the client registers items as queued, workers mark them. Rows are keyed by
# (job_id, ref), whose primary-key index also serves every lookup by job_id alone.
job_items = Table(
    "job_items",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("ref", Text, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint(_one_of("state", JOB_ITEM_STATES), name="state"),
)

# Resumable positions, e.g. where the nightly backfill stopped listing a bucket.
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)


VECTOR_TABLES: tuple[str, ...] = ("photo_vectors", "photo_codes")
"""Tables of the vector index (:mod:`tagger.store.vectors`), made by migration 0004 in each
dialect's own form (a pgvector table, a sqlite-vec virtual table with its shadow tables), so
they are not in ``metadata``."""


def is_declared(name: str | None) -> bool:
    """Whether schema comparison should look at a table: not the vector index's own."""
    return name is None or not name.startswith(VECTOR_TABLES)
