"""ingest_cursors: resume points of bucket-inbox listings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_cursors",
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("start_after", sa.Text),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_ingest_cursors")),
    )


def downgrade() -> None:
    op.drop_table("ingest_cursors")
