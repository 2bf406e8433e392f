"""jobs: a CHECK that a job has a lease owner exactly while it runs, an index for the
next runnable time, and on SQLite the claim index ordered by priority descending again

The runner's updates of its own jobs (completion, failure, release, lease renewal) are
guarded by ``lease_owner = :runner`` alone, which lets the planner reach the batch by
primary key; this constraint is what makes the owner alone mean "running, and held".

SQLite rebuilds a table to change its constraints and re-creates its indexes from what
it reflects, which loses a column's DESC: since 0005 ``ix_jobs_claim`` there was
``(model, priority, id)``, so every claim (ORDER BY priority DESC, id) sorted all of
its model's queued jobs. The index is made again as 0001 made it, after the rebuild.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import views_set_aside

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHECK = "(state = 'running') = (lease_owner IS NOT NULL)"
NAME = "ck_jobs_lease_while_running"


def upgrade() -> None:
    # Every writer keeps this already; rows left otherwise by hand are put right first: a
    # stray owner is dropped, and a running job nobody holds (no runner could finish it,
    # nor the reaper see it) goes back to the queue.
    op.execute(
        "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL"
        " WHERE state <> 'running' AND lease_owner IS NOT NULL"
    )
    op.execute(
        "UPDATE jobs SET state = 'queued', lease_expires_at = NULL"
        " WHERE state = 'running' AND lease_owner IS NULL"
    )
    with views_set_aside(), op.batch_alter_table("jobs") as batch:
        batch.create_check_constraint(op.f(NAME), sa.text(CHECK))
    _claim_index_descending()
    op.create_index(
        "ix_jobs_run_after",
        "jobs",
        ["run_after"],
        postgresql_where=sa.text("state = 'queued'"),
        sqlite_where=sa.text("state = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_run_after", "jobs")
    with views_set_aside(), op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f(NAME), type_="check")
    _claim_index_descending()


def _claim_index_descending() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_jobs_claim", "jobs")
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["model", sa.text("priority DESC"), "id"],
        sqlite_where=sa.text("state = 'queued'"),
    )
