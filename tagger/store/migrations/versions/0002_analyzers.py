"""Analysers: each result records which analysers made it (with their own tags) and the fields
the new ones fill: detected objects and their counts, colours, the safety score, words.

Round-1 results were made by the classifier alone, and their ``model_version`` is its version;
they become results of the ``classify`` analyser at that version, with their friendly tags as
its tags, so ``--retag-outdated`` runs only the new analysers on them and keeps their classes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.add_column(
            sa.Column("analyzers", _Json, nullable=True, comment="name -> AnalyzerRun dict")
        )
        batch.add_column(
            sa.Column("objects", _Json, nullable=True, comment="list of DetectedObject dicts")
        )
        batch.add_column(sa.Column("counts", _Json, nullable=True, comment="label -> count"))
        batch.add_column(sa.Column("colours", _Json, nullable=True, comment="Colours dict"))
        batch.add_column(sa.Column("nsfw", sa.Float(), nullable=True, comment="safety score"))
        batch.add_column(sa.Column("text", _Json, nullable=True, comment="words read"))
    # "flagged photos, most likely first" starts from the score.
    op.create_index("ix_photos_nsfw", "photos", ["nsfw"])
    _round1_results_as_classify_runs()


def _round1_results_as_classify_runs() -> None:
    """Give every tagged round-1 row a ``classify`` run: its version and its friendly tags."""
    conn = op.get_bind()
    photos = sa.table(
        "photos",
        sa.column("ref", sa.Text()),
        sa.column("status", sa.String()),
        sa.column("model_version", sa.String()),
        sa.column("analyzers", _Json),
    )
    tags = sa.table(
        "tags",
        sa.column("ref", sa.Text()),
        sa.column("kind", sa.String()),
        sa.column("tag", sa.Text()),
        sa.column("score", sa.Float()),
        sa.column("parents", _Json),
    )
    after = ""
    while True:
        rows = conn.execute(
            sa.select(photos.c.ref, photos.c.model_version)
            .where(
                photos.c.status == "tagged",
                photos.c.model_version.is_not(None),
                photos.c.ref > after,
            )
            .order_by(photos.c.ref)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        refs = [row.ref for row in rows]
        friendly: dict[str, list[dict[str, Any]]] = {ref: [] for ref in refs}
        for tag in conn.execute(
            sa.select(tags.c.ref, tags.c.tag, tags.c.score, tags.c.parents)
            .where(tags.c.ref.in_(refs), tags.c.kind == "friendly")
            .order_by(tags.c.ref, tags.c.score.desc(), tags.c.tag)
        ):
            parents = tag.parents if not isinstance(tag.parents, str) else json.loads(tag.parents)
            friendly[tag.ref].append(
                {"name": tag.tag, "score": tag.score, "parents": parents or []}
            )
        for row in rows:
            run = {"version": row.model_version, "tags": friendly[row.ref], "fields": ["classes"]}
            conn.execute(
                photos.update().where(photos.c.ref == row.ref).values(analyzers={"classify": run})
            )
        after = refs[-1]


def downgrade() -> None:
    op.drop_index("ix_photos_nsfw", table_name="photos")
    with op.batch_alter_table("photos") as batch:
        for column in ("text", "nsfw", "colours", "counts", "objects", "analyzers"):
            batch.drop_column(column)
