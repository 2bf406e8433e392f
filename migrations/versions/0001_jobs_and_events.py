"""jobs, job_events, and the reporting views job_summary / job_history

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STATES = ("queued", "running", "succeeded", "failed", "rejected", "cancelled", "waiting")


def _seconds(later: str, earlier: str) -> str:
    if op.get_context().dialect.name == "sqlite":
        return f"(julianday({later}) - julianday({earlier})) * 86400.0"
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200)),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("output_format", sa.String(8), nullable=False, server_default="glb"),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("spec", sa.JSON),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("source_entry", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("run_after", UTCDateTime, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("error", sa.Text),
        sa.Column("outputs_uri", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint(
            "source_uri",
            "source_sha256",
            "source_entry",
            name=op.f("uq_jobs_source_uri_source_sha256_source_entry"),
        ),
        sa.CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")",
            name=op.f("ck_jobs_state_known"),
        ),
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["model", sa.text("priority DESC"), "id"],
        postgresql_where=sa.text("state = 'queued'"),
        sqlite_where=sa.text("state = 'queued'"),
    )
    op.create_index(
        "ix_jobs_lease",
        "jobs",
        ["lease_expires_at"],
        postgresql_where=sa.text("state = 'running'"),
        sqlite_where=sa.text("state = 'running'"),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])

    op.create_table(
        "job_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("runner", sa.String(100)),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("detail", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_events_job_id_jobs"),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])

    op.execute(
        f"""
        CREATE VIEW job_summary AS
        SELECT j.id, j.task, j.model, j.state, j.priority, j.attempts,
               CASE WHEN j.source_entry >= 0
                    THEN j.source_uri || '#' || CAST(j.source_entry AS TEXT)
                    ELSE j.source_uri END AS source,
               j.created_at, j.started_at, j.finished_at,
               {_seconds("j.started_at", "j.created_at")} AS wait_s,
               {_seconds("j.finished_at", "j.started_at")} AS run_s,
               j.error
        FROM jobs j
        """
    )
    op.execute(
        """
        CREATE VIEW job_history AS
        SELECT e.job_id, j.task, j.model, e.from_state, e.to_state, e.at,
               e.runner, e.attempt, e.detail
        FROM job_events e JOIN jobs j ON j.id = e.job_id
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW job_history")
    op.execute("DROP VIEW job_summary")
    op.drop_table("job_events")
    op.drop_table("jobs")
