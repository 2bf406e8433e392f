"""The job_events row every state change writes, in the same transaction as the change:
the history that ``job_history`` shows and reports count."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, String, bindparam, insert, literal, null, select

from db.clock import now_expr
from db.dialects import Dialect, EventRows
from db.models import EVENT_COLUMNS, job_events, jobs

# The runner and detail of a prebuilt statement's events, bound per call.
WHO_WHY = (bindparam("p_owner", type_=String), bindparam("p_detail", type_=String))


def event_rows(
    rows: Any, from_state: str | None, to_state: Any, at: Any, runner: Any, detail: Any
) -> Any:
    """SELECT of job_events rows (EVENT_COLUMNS) for the jobs in ``rows`` (the jobs table
    or a CTE of moved jobs), each row supplying its id and attempt."""
    return select(
        rows.c.id,
        literal(from_state, String) if from_state else null(),
        to_state if isinstance(to_state, ColumnElement) else literal(to_state, String),
        at,
        runner,
        rows.c.attempts,
        detail,
    )


def of_moved(d: Dialect, from_state: str | None, to_state: str) -> EventRows:
    """The events of a prebuilt statement's moved jobs: at its clock, its runner and
    detail bound as ``p_owner`` and ``p_detail``."""
    return lambda rows: event_rows(rows, from_state, to_state, d.clock(), *WHO_WHY)


def record(
    conn: Connection,
    ids: list[int],
    from_state: str | None,
    to_state: Any,
    *,
    runner: str | None,
    detail: Any = None,
) -> None:
    """One event per job, in one INSERT ... SELECT (the row supplies attempt/state)."""
    if not ids:
        return
    det = detail if isinstance(detail, ColumnElement) else literal(detail, String)
    who = literal(runner, String) if runner else null()
    rows = event_rows(jobs, from_state, to_state, now_expr(conn), who, det)
    conn.execute(insert(job_events).from_select(EVENT_COLUMNS, rows.where(jobs.c.id.in_(ids))))
