"""model_loads: measured load times, batch times and peak GPU memory per model

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_loads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("runner", sa.String(100)),
        sa.Column("device", sa.String(32)),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("batch_size", sa.Integer),
        sa.Column("peak_vram_mb", sa.Float),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_loads")),
        sa.CheckConstraint("kind IN ('load', 'batch')", name=op.f("ck_model_loads_kind_known")),
    )
    op.create_index("ix_model_loads_model_kind_id", "model_loads", ["model", "kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_model_loads_model_kind_id", "model_loads")
    op.drop_table("model_loads")
