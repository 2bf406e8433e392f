"""Chained stages ('then'): a stage waits for its parent and takes the parent's mesh; a
stage that ended for good ends every later one, so a chain never waits forever."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from db.clock import now_expr
from db.models import jobs
from db.queue.state_events import record


def promote(conn: Connection, meshes: dict[int, str]) -> list[int]:
    """Queue the waiting next stage of each succeeded job in ``meshes`` ({parent id: URI
    of its output mesh}), with that mesh as its input. Returns the ids queued."""
    if not meshes:
        return []
    children = conn.execute(
        select(jobs.c.id, jobs.c.parent_id, jobs.c.inputs).where(
            jobs.c.parent_id.in_(meshes), jobs.c.state == "waiting"
        )
    ).all()
    clock = now_expr(conn)
    queued = []
    for child in children:
        inputs = {**(child.inputs or {}), "mesh": meshes[child.parent_id]}
        moved = conn.execute(
            update(jobs)
            .where(jobs.c.id == child.id, jobs.c.state == "waiting")
            .values(state="queued", inputs=inputs, run_after=clock)
        ).rowcount
        if moved:
            queued.append(child.id)
            record(conn, [child.id], "waiting", "queued", runner=None,
                   detail=f"job {child.parent_id} succeeded")  # fmt: skip
    return queued


def end_descendants(conn: Connection, ids: list[int], to: str = "failed") -> list[int]:
    """End the later stages of jobs that ended for good (failed, cancelled) with the
    reason "stage N (task) failed: ..." so a chain never waits forever. Returns their ids."""
    if not ids:
        return []
    ended: list[int] = []
    reasons = {
        r.id: f"stage {r.stage + 1} ({r.task}) "
        + ("was cancelled" if r.state == "cancelled" else "failed")
        + (f": {r.error}" if r.error else "")
        for r in conn.execute(
            select(jobs.c.id, jobs.c.stage, jobs.c.task, jobs.c.state, jobs.c.error).where(
                jobs.c.id.in_(ids), jobs.c.stage < jobs.c.stages - 1
            )
        )
    }
    clock = now_expr(conn)
    while reasons:
        children = conn.execute(
            select(jobs.c.id, jobs.c.parent_id).where(
                jobs.c.parent_id.in_(reasons), jobs.c.state == "waiting"
            )
        ).all()
        following: dict[int, str] = {}
        for child in children:
            reason = reasons[child.parent_id]
            conn.execute(
                update(jobs)
                .where(jobs.c.id == child.id, jobs.c.state == "waiting")
                .values(state=to, error=reason, finished_at=clock)
            )
            record(conn, [child.id], "waiting", to, runner=None, detail=reason)
            following[child.id] = reason
            ended.append(child.id)
        reasons = following
    return ended


def chain(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    """Every stage of the chain ``job_id`` belongs to, first stage first."""
    row = conn.execute(
        select(jobs.c.source_uri, jobs.c.source_sha256, jobs.c.source_entry).where(
            jobs.c.id == job_id
        )
    ).first()
    if row is None:
        return []
    rows = conn.execute(
        select(jobs)
        .where(
            jobs.c.source_uri == row.source_uri,
            jobs.c.source_sha256 == row.source_sha256,
            jobs.c.source_entry == row.source_entry,
        )
        .order_by(jobs.c.stage)
    )
    return [dict(r._mapping) for r in rows]
