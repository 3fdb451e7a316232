"""Each photo's signature (``tagger.similarity``): the vector "more like this" ranks by, kept
as float16 bytes beside the result it belongs to (same analyser run, same version).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.add_column(
            sa.Column(
                "signature", sa.LargeBinary(), nullable=True, comment="float16 signature vector"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("signature")
