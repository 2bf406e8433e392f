"""Jobs and their events as they are, for the runner, the CLI and tests (what people read
goes through the analyst views: ``db.reports``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from db.models import job_events, jobs


def get_job(conn: Connection, job_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
    return dict(row._mapping) if row else None


def list_jobs(conn: Connection, *, limit: int | None = None) -> list[dict[str, Any]]:
    stmt = select(jobs).order_by(jobs.c.id)
    if limit:
        stmt = stmt.limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def events(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
    )
    return [dict(r._mapping) for r in rows]


def count_by_state(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))
    return {s: n for s, n in rows}


def last_id(conn: Connection) -> int:
    """The newest job's id, 0 when there is none: how far a burst of inserts has got, read
    from the primary key alone (a count would read every row)."""
    return int(conn.execute(select(func.coalesce(func.max(jobs.c.id), 0))).scalar_one())


@dataclass(frozen=True)
class Arrival:
    """When a job's row was made, and from which source: what an ingest benchmark times."""

    id: int
    source_uri: str
    state: str
    created_at: datetime


def arrivals(conn: Connection, *, after_id: int = 0) -> list[Arrival]:
    """The jobs with an id above ``after_id``, oldest first."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.source_uri, jobs.c.state, jobs.c.created_at)
        .where(jobs.c.id > after_id)
        .order_by(jobs.c.id)
    )
    return [Arrival(*r) for r in rows]
