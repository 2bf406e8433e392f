"""New rows from job files, idempotently: a re-scan, a duplicate event or a restart makes
no second row for the same (source, content, entry, stage)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, String, bindparam, cast, literal, select, update

from db.clock import now
from db.dialects import dialect_of
from db.models import jobs
from db.queue.state_events import record


@dataclass
class NewJob:
    """One row to create. ``state`` is ``queued`` or ``rejected`` (with ``error``), or
    ``waiting`` for stage ``stage`` > 0 of a chain: its parent is the same entry's row
    of the stage before."""

    task: str
    model: str
    source_uri: str
    source_sha256: str
    source_entry: int = -1
    state: str = "queued"
    name: str | None = None
    priority: int = 0
    params: dict[str, Any] | None = None
    seed: int | None = None
    output_format: str = "glb"
    inputs: dict[str, Any] | None = None
    spec: Any = None
    max_attempts: int = 3
    error: str | None = None
    stage: int = 0
    stages: int = 1


@dataclass(frozen=True)
class Enqueued:
    id: int
    source_entry: int
    state: str
    created: bool  # False: this (source, content, entry) was ingested before
    stage: int = 0


# Ids and source URIs go to the database as bound lists in slices of this many: SQLite
# refuses a statement with more than 32,766 variables, PostgreSQL more than 65,535.
IN_CHUNK = 500

Key = tuple[str, str, int, int]  # source_uri, source_sha256, source_entry, stage


def _chunks(items: list[Any], size: int = IN_CHUNK) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def known(conn: Connection, sources: Collection[tuple[str, str]]) -> dict[Key, tuple[int, str]]:
    """The rows already made from these (source URI, content hash) pairs: {(uri, hash,
    entry, stage): (id, state)}. Read by URI (the unique key's leading column) in slices."""
    wanted = set(sources)
    found: dict[Key, tuple[int, str]] = {}
    for uris in _chunks(sorted({uri for uri, _ in wanted})):
        rows = conn.execute(
            select(jobs.c.source_uri, jobs.c.source_sha256, jobs.c.source_entry, jobs.c.stage,
                   jobs.c.id, jobs.c.state).where(jobs.c.source_uri.in_(uris))
        )  # fmt: skip
        for uri, sha, entry, stage, job_id, state in rows:
            if (uri, sha) in wanted:
                found[(uri, sha, entry, stage)] = (job_id, state)
    return found


def _key(j: NewJob) -> Key:
    return j.source_uri, j.source_sha256, j.source_entry, j.stage


def enqueue_file(conn: Connection, new: list[NewJob], outputs_root: str) -> list[Enqueued]:
    """Create the rows of one source file, idempotently (see ``enqueue_files``)."""
    if not new:
        return []
    if any(j.source_uri != new[0].source_uri or j.source_sha256 != new[0].source_sha256
           for j in new):  # fmt: skip
        raise ValueError("enqueue_file takes the jobs of one source file")
    return enqueue_files(conn, [new], outputs_root)[0]


def enqueue_files(
    conn: Connection, files: list[list[NewJob]], outputs_root: str
) -> list[list[Enqueued]]:
    """Create the rows of several source files in the caller's transaction, idempotently.

    The unique key (source_uri, source_sha256, source_entry, stage) makes a re-scan, a
    duplicate event or a restart a no-op: the existing rows are returned instead. A
    burst of files costs a handful of statements, not a handful per file: one read of
    what exists, one multi-row insert, one read of the new ids, one insert of their
    events. ``outputs_root`` (ending in '/') fixes rejected rows' error-manifest folder.
    The stages of a chain are linked to their parents in the same transaction.
    """
    rows = [j for new in files for j in new]
    if not rows:
        return [[] for _ in files]
    before = known(conn, {(j.source_uri, j.source_sha256) for j in rows})
    todo = [j for j in rows if _key(j) not in before]
    after = before
    if todo:
        ts = now(conn)  # the database's clock, the one claim() compares against
        values = [
            {
                "name": j.name,
                "task": j.task,
                "model": j.model,
                "state": j.state,
                "priority": j.priority,
                "params": j.params or {},
                "seed": j.seed,
                "output_format": j.output_format,
                "inputs": j.inputs or {},
                "spec": j.spec,
                "source_uri": j.source_uri,
                "source_entry": j.source_entry,
                "source_sha256": j.source_sha256,
                "max_attempts": j.max_attempts,
                "run_after": ts,
                "created_at": ts,
                "finished_at": ts if j.state == "rejected" else None,
                "error": j.error,
                "stage": j.stage,
                "stages": j.stages,
            }
            for j in todo
        ]
        stmt = (
            dialect_of(conn)
            .insert(jobs)
            .on_conflict_do_nothing(
                index_elements=["source_uri", "source_sha256", "source_entry", "stage"]
            )
        )
        conn.execute(stmt, values)
        after = known(conn, {(j.source_uri, j.source_sha256) for j in todo}) | before
    created = [after[_key(j)][0] for j in todo if _key(j) in after]
    rejected = [after[_key(j)][0] for j in todo if j.state == "rejected" and _key(j) in after]
    for ids in _chunks(rejected):
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(ids), jobs.c.state == "rejected")
            .values(outputs_uri=literal(outputs_root + "rejected/") + cast(jobs.c.id, String))
        )
    links = [
        {"p_child": after[_key(j)][0],
         "p_parent": after[(j.source_uri, j.source_sha256, j.source_entry, j.stage - 1)][0]}
        for j in todo
        if j.stage > 0
    ]  # fmt: skip
    if links:  # one executemany, not a statement per stage
        conn.execute(
            update(jobs)
            .where(jobs.c.id == bindparam("p_child"))
            .values(parent_id=bindparam("p_parent")),
            links,
        )
    for ids in _chunks(created):
        record(conn, ids, None, jobs.c.state, runner=None, detail=jobs.c.error)
    return [
        [
            Enqueued(
                id=after[_key(j)][0],
                source_entry=j.source_entry,
                state=after[_key(j)][1],
                created=_key(j) not in before,
                stage=j.stage,
            )
            for j in new
        ]
        for new in files
    ]
