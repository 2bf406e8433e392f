"""What is runnable, as a runner asks before it claims: the queued work per model (for the
planner) and when the next job becomes runnable (for an idle runner)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text

from db.clock import now_expr
from db.dialects import dialect_of
from db.models import UTCDateTime, jobs


@dataclass(frozen=True)
class ModelDemand:
    """Runnable queued work of one model, as the model chooser sees it."""

    model: str
    ready: int
    top_priority: int
    oldest_created_at: datetime


# The planner asks of a model's backlog only whether two full batches wait (and how
# urgent and how old its next ones are), so demand reads at most this many of a model's
# runnable jobs: its cost stays flat however deep the queue, where a GROUP BY over the
# whole queue, asked by every runner every plan interval, grew with the backlog.
DEMAND_CAP = 1_000


def demand(conn: Connection, *, cap: int = DEMAND_CAP) -> list[ModelDemand]:
    """Runnable queued work per model: how many jobs (counted up to ``cap``), the top
    priority, and the oldest ``created_at`` among the first ``cap`` in claim order (the
    jobs the model's next batches take).

    The models come from a skip scan of the claim index (one probe per model with
    queued jobs, including models no longer in the registry, whose jobs the runner
    must fail); then one bounded read per model along that index.
    """
    d = dialect_of(conn)
    queued = jobs.c.state == "queued"
    # The next model after ``after`` in the claim index.
    step = text(
        f"SELECT model FROM jobs{d.along('ix_jobs_claim')}"
        " WHERE state = 'queued' AND model > :after ORDER BY model LIMIT 1"
    )
    models: list[str] = []
    model = conn.execute(step, {"after": ""}).scalar()  # a model id is never empty
    while model is not None:
        models.append(model)
        model = conn.execute(step, {"after": model}).scalar()
    clock = now_expr(conn)
    found = []
    for model in models:
        head = (
            select(jobs.c.priority, jobs.c.created_at)
            .where(queued, jobs.c.model == model, jobs.c.run_after <= clock)
            .order_by(jobs.c.priority.desc(), jobs.c.id)
            .limit(cap)
            .subquery()
        )
        n, top, oldest = conn.execute(
            select(func.count(), func.max(head.c.priority), func.min(head.c.created_at))
        ).one()
        if n:
            found.append(ModelDemand(
                model=model, ready=n, top_priority=top,
                oldest_created_at=UTCDateTime().process_result_value(oldest, conn.dialect),  # type: ignore[arg-type]
            ))  # fmt: skip
    return found


@dataclass(frozen=True)
class Outlook:
    """What an idle runner needs to know, read in one statement (one snapshot)."""

    next_run_after: datetime | None  # earliest queued job's run_after; None: none queued
    any_running: bool


def outlook(conn: Connection, models: Collection[str] | None = None) -> Outlook:
    """When the next queued job becomes runnable, and whether any job is running; with
    ``models``, only jobs of those models (the ones a runner could take).

    One statement, not two: on PostgreSQL each statement of a READ COMMITTED transaction
    takes a fresh snapshot, so reading "queued" and then "running" separately can miss a
    job that the reaper moves from running back to queued in between.
    """
    d = dialect_of(conn)
    if models is None:
        stmt = text(
            f"SELECT (SELECT run_after FROM jobs{d.along('ix_jobs_run_after')}"
            " WHERE state = 'queued' ORDER BY run_after LIMIT 1),"
            " EXISTS (SELECT 1 FROM jobs WHERE state = 'running')"
        )
        params: dict[str, Any] = {}
    elif not models:
        return Outlook(None, False)
    else:
        # Along the claim index, which holds the queued jobs by model: however many jobs
        # of other models wait, the runner reads only its own models' entries.
        stmt = text(
            f"SELECT (SELECT min(run_after) FROM jobs{d.along('ix_jobs_claim')}"
            " WHERE state = 'queued' AND model IN :models),"
            " EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND model IN :models)"
        ).bindparams(bindparam("models", expanding=True))
        params = {"models": sorted(models)}
    value, busy = conn.execute(stmt, params).one()
    return Outlook(UTCDateTime().process_result_value(value, conn.dialect), bool(busy))
