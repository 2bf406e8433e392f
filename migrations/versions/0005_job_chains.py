"""jobs.parent_id, stage, stages: chained stages ('then') as linked job rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import views_set_aside

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_KEY = ["source_uri", "source_sha256", "source_entry"]


def upgrade() -> None:
    with views_set_aside(), op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")))
        batch.add_column(sa.Column("stage", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("stages", sa.Integer, nullable=False, server_default="1"))
        batch.create_foreign_key(op.f("fk_jobs_parent_id_jobs"), "jobs", ["parent_id"], ["id"])
        # One source entry is now one row per stage.
        batch.drop_constraint(op.f("uq_jobs_source_uri_source_sha256_source_entry"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_jobs_source_uri_source_sha256_source_entry_stage"), [*OLD_KEY, "stage"]
        )
    op.create_index(
        "ix_jobs_parent_id",
        "jobs",
        ["parent_id"],
        postgresql_where=sa.text("parent_id IS NOT NULL"),
        sqlite_where=sa.text("parent_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_parent_id", "jobs")
    op.execute("DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE stage > 0)")
    op.execute("UPDATE jobs SET parent_id = NULL")
    op.execute("DELETE FROM jobs WHERE stage > 0")
    with views_set_aside(), op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(
            op.f("uq_jobs_source_uri_source_sha256_source_entry_stage"), type_="unique"
        )
        batch.create_unique_constraint(
            op.f("uq_jobs_source_uri_source_sha256_source_entry"), OLD_KEY
        )
        batch.drop_constraint(op.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        batch.drop_column("stages")
        batch.drop_column("stage")
        batch.drop_column("parent_id")
