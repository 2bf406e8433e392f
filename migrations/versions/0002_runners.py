"""runners table; jobs.lost_count (how often a runner died holding the job)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runners",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("stopped_at", UTCDateTime),
        sa.Column("resident_models", sa.JSON, nullable=False),
        sa.Column("devices", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runners")),
        sa.CheckConstraint(
            "state IN ('running', 'stopped', 'gone')", name=op.f("ck_runners_state_known")
        ),
    )
    op.create_index("ix_runners_state", "runners", ["state"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lost_count", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lost_count")
    op.drop_index("ix_runners_state", "runners")
    op.drop_table("runners")
