"""What an admin does to jobs: cancel and retry. Each locks the rows it reads
(``FOR UPDATE``) and moves only those still in a state that allows it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from db.clock import now_expr
from db.models import jobs
from db.queue.chains import end_descendants
from db.queue.state_events import record

CANCELLABLE = ("queued", "running", "waiting")
RETRYABLE = ("failed", "cancelled")


def _admin(
    conn: Connection,
    ids: list[int],
    allowed: tuple[str, ...],
    values: dict[str, Any],
    to: str,
    detail: str,
) -> dict[int, tuple[bool, str]]:
    """Move jobs in ``allowed`` states to ``to``. Returns {id: (moved, state)} for every id
    asked: (True, new state), or (False, the state that did not allow it / 'missing')."""
    found = dict(
        conn.execute(
            select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(ids)).with_for_update()
        ).all()
    )
    movable = [i for i in ids if found.get(i) in allowed]
    for state in {found[i] for i in movable}:  # one event batch per previous state
        group = [i for i in movable if found[i] == state]
        conn.execute(
            update(jobs).where(jobs.c.id.in_(group), jobs.c.state == state).values(**values)
        )
        record(conn, group, state, to, runner=None, detail=detail)
    return {i: (True, to) if i in movable else (False, found.get(i, "missing")) for i in ids}


def cancel(conn: Connection, ids: list[int]) -> dict[int, tuple[bool, str]]:
    """Cancel queued, waiting or running jobs. A running job's runner sees its lease gone
    at the next heartbeat and abandons it; its late result is never recorded."""
    values = {"state": "cancelled", "finished_at": now_expr(conn), "lease_owner": None,
              "lease_expires_at": None}  # fmt: skip
    result = _admin(conn, ids, CANCELLABLE, values, "cancelled", "cancelled by an admin")
    end_descendants(conn, [i for i, (moved, _) in result.items() if moved], to="cancelled")
    return result


def retry(conn: Connection, ids: list[int]) -> dict[int, tuple[bool, str]]:
    """Queue failed or cancelled jobs again with fresh attempts (not rejected ones: their
    input is invalid and would be rejected again). The later stages of a retried job
    wait for it again; a stage whose earlier stage has not succeeded is not retried."""
    blocked = {
        i: (False, f"{state} (waits for job {pid}: retry that one)")
        for i, pid, state in _parents_of(conn, ids)
        if state != "succeeded"
    }
    values = {"state": "queued", "run_after": now_expr(conn), "attempts": 0, "lost_count": 0,
              "error": None, "finished_at": None}  # fmt: skip
    result = _admin(conn, [i for i in ids if i not in blocked], RETRYABLE, values, "queued",
                    "retried by an admin")  # fmt: skip
    _wait_again(conn, [i for i, (moved, _) in result.items() if moved])
    return {i: blocked.get(i) or result[i] for i in ids}


def _parents_of(conn: Connection, ids: list[int]) -> list[tuple[int, int, str]]:
    """(job id, parent id, parent state) of the jobs in ``ids`` that have a parent."""
    parent = jobs.alias("parent")
    rows = conn.execute(
        select(jobs.c.id, parent.c.id, parent.c.state)
        .join_from(jobs, parent, parent.c.id == jobs.c.parent_id)
        .where(jobs.c.id.in_(ids))
    )
    return [(a, b, c) for a, b, c in rows]


def _wait_again(conn: Connection, ids: list[int]) -> None:
    """The later stages that a retried job's failure had ended wait for it again."""
    frontier = list(ids)
    while frontier:
        later = conn.execute(
            select(jobs.c.id, jobs.c.state).where(
                jobs.c.parent_id.in_(frontier), jobs.c.state.in_(RETRYABLE)
            )
        ).all()
        for state in {r.state for r in later}:
            group = [r.id for r in later if r.state == state]
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(group), jobs.c.state == state)
                .values(state="waiting", attempts=0, lost_count=0, error=None, finished_at=None)
            )
            record(conn, group, state, "waiting", runner=None,
                   detail="an earlier stage was retried")  # fmt: skip
        frontier = [r.id for r in later]
