"""The round-1 schema: photos with their top classes, the tag index, job items, cursors.

A database made before migrations existed has exactly these tables and no ``alembic_version``;
:func:`tagger.store.schema.migrate` stamps it at this revision instead of running it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tagger.store.tables import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "photos",
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error", sa.String(64), nullable=True, comment="machine-readable failure code"),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("classes", _Json, nullable=False, comment="list of ClassScore dicts"),
        sa.Column("tagged_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('tagged', 'failed', 'skipped')", name=op.f("ck_photos_status")
        ),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_photos")),
    )
    op.create_index("ix_photos_status_tagged_at", "photos", ["status", "tagged_at"])
    op.create_index("ix_photos_model_version", "photos", ["model_version"])
    op.create_table(
        "tags",
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tag", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column(
            "parents",
            _Json,
            nullable=True,
            comment="for kind='friendly': the tag's parents, in order, so get() can rebuild it",
        ),
        sa.CheckConstraint("kind IN ('class', 'friendly', 'parent')", name=op.f("ck_tags_kind")),
        sa.ForeignKeyConstraint(
            ["ref"], ["photos.ref"], name=op.f("fk_tags_ref_photos"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("ref", "kind", "tag", name=op.f("pk_tags")),
    )
    op.create_index("ix_tags_tag_score", "tags", ["tag", "score"])
    op.create_table(
        "job_items",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "state IN ('queued', 'done', 'failed', 'skipped')", name=op.f("ck_job_items_state")
        ),
        sa.PrimaryKeyConstraint("job_id", "ref", name=op.f("pk_job_items")),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cursors")),
    )


def downgrade() -> None:
    op.drop_table("cursors")
    op.drop_table("job_items")
    op.drop_index("ix_tags_tag_score", table_name="tags")
    op.drop_table("tags")
    op.drop_index("ix_photos_model_version", table_name="photos")
    op.drop_index("ix_photos_status_tagged_at", table_name="photos")
    op.drop_table("photos")
