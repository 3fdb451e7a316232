"""The vector index (:mod:`tagger.store.vectors`): pgvector's ``photo_vectors`` on PostgreSQL,
sqlite-vec's ``photo_codes`` on SQLite, filled from the signatures already stored.

PostgreSQL needs the pgvector extension installed on the server (the ``pgvector/pgvector``
images have it); without it this revision stops with that message instead of leaving a store
that cannot answer "more like this".

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

from tagger.store.vectors import CODE_BITS, PgVectorIndex, SqliteVecIndex, VectorIndex

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_PAGE = 1000


class PgVectorMissing(RuntimeError):
    """The PostgreSQL server has no pgvector extension to create."""


def upgrade() -> None:
    conn = op.get_bind()
    index: VectorIndex
    if conn.dialect.name == "postgresql":
        available = conn.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        ).first()
        if available is None:
            raise PgVectorMissing(
                "this PostgreSQL server has no pgvector extension, which tagger's vector index "
                "needs: install it (package postgresql-NN-pgvector) or run the "
                "pgvector/pgvector image"
            )
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
        op.execute(
            f"CREATE TABLE {PgVectorIndex.table} ("
            "ref text PRIMARY KEY REFERENCES photos(ref) ON DELETE CASCADE, "
            "dims integer NOT NULL, vector halfvec NOT NULL)"
        )
        index = PgVectorIndex()
    else:
        op.execute(
            f"CREATE VIRTUAL TABLE {SqliteVecIndex.table} "
            f"USING vec0(ref text primary key, code bit[{CODE_BITS}])"
        )
        index = SqliteVecIndex()
    photos = sa.table("photos", sa.column("ref", sa.Text), sa.column("signature", sa.LargeBinary))
    after = ""
    while True:
        page = conn.execute(
            sa.select(photos.c.ref, photos.c.signature)
            .where(photos.c.signature.is_not(None), photos.c.ref > after)
            .order_by(photos.c.ref)
            .limit(_PAGE)
        ).all()
        if not page:
            break
        index.put(
            conn,
            {row.ref: np.frombuffer(row.signature, "<f2").astype(np.float32) for row in page},
        )
        after = page[-1].ref


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TABLE {PgVectorIndex.table}")
    else:
        op.execute(f"DROP TABLE {SqliteVecIndex.table}")
