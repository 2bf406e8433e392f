"""A runner's jobs, from claim to their end: the claim under a lease, its renewal, a batch's
completion, a failed attempt, handing jobs back, and the reaper that takes expired leases
back. Every statement that takes or gives up a lease is here, so the locking reads in
one sitting.

A running job has a lease owner exactly while it runs (a CHECK constraint), and every
runner's update of its own jobs is guarded by ``lease_owner = <runner>``: a runner that
lost its lease (reaped, cancelled) cannot overwrite the work of the one that took the job
over, and ``succeeded`` is reached once and only once.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    String,
    bindparam,
    case,
    cast,
    literal,
    null,
    select,
    update,
)

from db.clock import after_expr, now_expr
from db.dialects import Dialect, Moving, dialect_of
from db.models import jobs
from db.queue.chains import end_descendants
from db.queue.state_events import of_moved, record

# The hot path (claim, finish, release) runs thousands of times a minute: its statements
# are built once per dialect with bind parameters, so a call costs SQLAlchemy a cache
# lookup instead of a rebuild. On PostgreSQL each is one statement whose data-modifying
# CTE also writes the state events (one round trip, no event rows through Python).

# What a runner reads of a claimed job (its manifest, its chain; not ``spec``, the whole
# job file entry): every column more is decoded 32 times a batch.
CLAIMED = (
    "id", "name", "task", "model", "priority", "params", "seed", "output_format", "inputs",
    "source_uri", "source_entry", "source_sha256", "attempts", "created_at", "started_at",
    "outputs_uri", "stage", "stages",
)  # fmt: skip


@functools.cache
def _claim_stmt(d: Dialect) -> Moving:
    pick = (
        select(jobs.c.id)
        .where(
            jobs.c.state == "queued",
            jobs.c.model == bindparam("p_model"),
            jobs.c.run_after <= d.clock(),
        )
        .order_by(jobs.c.priority.desc(), jobs.c.id)
        .limit(bindparam("p_limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    moved = (
        update(jobs)
        .where(jobs.c.id.in_(pick.scalar_subquery()))
        .values(
            state="running",
            lease_owner=bindparam("p_owner"),
            lease_expires_at=d.clock_plus("lease"),
            attempts=jobs.c.attempts + 1,
            started_at=d.clock(),
            outputs_uri=bindparam("outputs_root", type_=String) + cast(jobs.c.id, String),
        )
        .returning(*(jobs.c[name] for name in CLAIMED))
    )
    return d.moving(moved, of_moved(d, "queued", "running"))


def claim(
    conn: Connection,
    *,
    model: str,
    limit: int,
    owner: str,
    lease_s: float,
    outputs_root: str,
) -> list[dict[str, Any]]:
    """Take up to ``limit`` runnable jobs of ``model``, most urgent first, under a lease.

    PostgreSQL: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` so
    concurrent runners skip each other's rows instead of waiting. SQLite has no row
    locks (SQLAlchemy drops the clause there); the caller's BEGIN IMMEDIATE
    serialises writers, which gives the same guarantee.
    """
    rows = _claim_stmt(dialect_of(conn)).run(
        conn,
        {"p_model": model, "p_limit": limit, "p_owner": owner, "lease": timedelta(seconds=lease_s),
         "outputs_root": outputs_root, "p_detail": None},
    )  # fmt: skip
    rows.sort(key=lambda r: (-r["priority"], r["id"]))
    return rows


# ---------------------------------------------------------------------------- finish / fail


def _held(owner: Any) -> ColumnElement[bool]:
    """Still held by ``owner``. A job has a lease owner exactly while it is running (a
    CHECK constraint), so the owner alone says it; and without ``state = 'running'``
    the planner cannot pick the partial lease index for a runner's own jobs, a scan of
    every running row and every dead entry since the last vacuum, chosen whenever the
    statistics have not seen the running rows yet. By id, through the primary key, a
    batch's completion costs the batch and nothing more."""
    return jobs.c.lease_owner == owner


@functools.cache
def _move_held_stmt(d: Dialect, to: str, extra: tuple[str, ...]) -> Moving:
    """Move the listed jobs this runner still holds to ``to`` and clear their lease."""
    values: dict[str, Any] = {"state": to, "lease_owner": None, "lease_expires_at": None}
    for name in extra:
        if name == "finished_at":
            values[name] = d.clock()
        elif name == "error":
            values[name] = None
        elif name == "give_back":  # release: the attempt did not happen; runnable now
            values.update(attempts=jobs.c.attempts - 1, run_after=d.clock())
        elif name == "later":  # ... runnable again only after :delay
            values["run_after"] = d.clock_plus("delay")
    moved = (
        update(jobs)
        .where(d.ids_in("ids"), _held(bindparam("p_owner")))
        .values(**values)
        .returning(jobs.c.id, jobs.c.attempts)
    )
    return d.moving(moved, of_moved(d, "running", to))


def _move_held(
    conn: Connection,
    ids: list[int],
    owner: str,
    to: str,
    detail: str | None,
    *extra: str,
    delay: timedelta | None = None,
) -> list[int]:
    """Move the jobs of ``ids`` this runner still holds to ``to`` in one statement, clear
    their lease, and record the events; returns the ids moved."""
    if not ids:
        return []
    params: dict[str, Any] = {"ids": ids, "p_owner": owner, "p_detail": detail}
    if delay is not None:
        params["delay"] = delay
    rows = _move_held_stmt(dialect_of(conn), to, extra).run(conn, params)
    return [r["id"] for r in rows]


def finish(conn: Connection, ids: list[int], *, owner: str) -> list[int]:
    """Mark a batch succeeded in one statement; returns the ids this runner still held.

    A job whose lease was lost (reaped, cancelled) is not touched, so ``succeeded``
    is reached once and only once.
    """
    return _move_held(conn, ids, owner, "succeeded", None, "finished_at", "error")


def fail(
    conn: Connection,
    job_id: int,
    *,
    owner: str,
    error: str,
    permanent: bool,
    retry_in_s: float,
    detail: str | None = None,
) -> str | None:
    """Record a failed attempt: back to ``queued`` after ``retry_in_s``, or ``failed``
    when the error is permanent or the attempts are spent. Returns the new state, or
    None when this runner no longer held the job."""
    give_up = literal(permanent) | (jobs.c.attempts >= jobs.c.max_attempts)
    row = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, _held(owner))
        .values(
            state=case((give_up, "failed"), else_="queued"),
            run_after=case((give_up, jobs.c.run_after), else_=after_expr(conn, retry_in_s)),
            finished_at=case((give_up, now_expr(conn)), else_=null()),
            lease_owner=None,
            lease_expires_at=None,
            error=error,
        )
        .returning(jobs.c.state, jobs.c.stage, jobs.c.stages)
    ).first()
    if row is None:
        return None
    record(conn, [job_id], "running", row.state, runner=owner, detail=detail or error)
    if row.state == "failed" and row.stage < row.stages - 1:
        end_descendants(conn, [job_id])
    return str(row.state)


# ---------------------------------------------------------------------------- leases


def renew(conn: Connection, ids: list[int], *, owner: str, lease_s: float) -> list[int]:
    """Extend the leases of the jobs ``ids`` this runner holds; returns those renewed.

    A job missing from the answer was taken from the runner (cancelled, or reaped
    after a stall): the runner must abandon it. Only jobs the runner knows it holds
    are renewed: one whose claim reply was lost (connection dropped at commit) must
    expire and be reaped, not stay leased to a runner that does not know of it.
    """
    if not ids:
        return []
    return list(
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(ids), _held(owner))
            .values(lease_expires_at=after_expr(conn, lease_s))
            .returning(jobs.c.id)
        ).scalars()
    )


def reap(conn: Connection, *, max_runner_deaths: int) -> dict[int, str]:
    """Return jobs whose lease expired to ``queued`` (their runner stopped heartbeating),
    or to ``failed`` once runners have died holding them ``max_runner_deaths`` times, so a
    job that kills its runner cannot loop forever. Returns {job id: new state}."""
    clock = now_expr(conn)
    stale = conn.execute(
        select(jobs.c.id, jobs.c.lease_owner)
        .where(jobs.c.state == "running", jobs.c.lease_expires_at < clock)
        .with_for_update(skip_locked=True)
    ).all()
    if not stale:
        return {}
    owners = {r.id: r.lease_owner for r in stale}
    dead_enough = jobs.c.lost_count + 1 >= max_runner_deaths
    rows = conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(owners), jobs.c.state == "running", jobs.c.lease_expires_at < clock)
        .values(
            state=case((dead_enough, "failed"), else_="queued"),
            lost_count=jobs.c.lost_count + 1,
            run_after=clock,
            finished_at=case((dead_enough, clock), else_=null()),
            error=case(
                (
                    dead_enough,
                    literal("its runner died ")
                    + cast(jobs.c.lost_count + 1, String)
                    + literal(" times"),
                ),
                else_=jobs.c.error,
            ),
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(jobs.c.id, jobs.c.state)
    ).all()
    result = {r.id: str(r.state) for r in rows}
    for job_id, state in result.items():
        record(
            conn, [job_id], "running", state, runner=None,
            detail=f"lease expired: runner {owners[job_id]} stopped heartbeating",
        )  # fmt: skip
    end_descendants(conn, [i for i, state in result.items() if state == "failed"])
    return result


def release(conn: Connection, ids: list[int], *, owner: str, reason: str) -> list[int]:
    """Hand held jobs back to ``queued`` at once (a runner shutting down in a hurry).
    The attempt is not counted: the job never got to fail."""
    return _move_held(conn, ids, owner, "queued", reason, "give_back")


def postpone(
    conn: Connection, ids: list[int], *, owner: str, reason: str, retry_in_s: float
) -> list[int]:
    """Hand held jobs back to ``queued``, runnable again after ``retry_in_s``, without
    counting the attempt: their outputs could not be written because the storage is
    out (read-only, full, unreachable), which is no fault of the job, and an outage of
    a few seconds must not spend every queued job's attempts. The event carries
    ``reason``. Returns the ids handed back."""
    return _move_held(conn, ids, owner, "queued", reason, "give_back", "later",
                      delay=timedelta(seconds=retry_in_s))  # fmt: skip
