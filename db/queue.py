"""Every statement the queue runs, in one place, so its locking can be read in one sitting.

Each function takes a Connection inside a transaction the caller opened (use
``Database.write()`` for anything that writes: on SQLite that is ``BEGIN IMMEDIATE``).
State changes are single guarded UPDATEs (``WHERE state = ...``, or for a runner's own
jobs ``WHERE lease_owner = ...``), never read-modify-write in Python, so a runner that
lost its lease cannot overwrite the work of the one that took the job over.

Time: PostgreSQL's ``now()`` when the database is shared by many hosts; on SQLite
(one host by construction) the Python clock.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Interval,
    String,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    null,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from db.engine import driver_rows
from db.models import UTCDateTime, job_events, jobs

EVENT_COLUMNS = ["job_id", "from_state", "to_state", "at", "runner", "attempt", "detail"]


def now_expr(conn: Connection) -> ColumnElement[datetime]:
    if conn.dialect.name == "postgresql":
        return func.now()
    return literal(datetime.now(UTC), UTCDateTime)


def after_expr(conn: Connection, seconds: float) -> ColumnElement[datetime]:
    if conn.dialect.name == "postgresql":
        return func.now() + literal(timedelta(seconds=seconds), Interval)
    return literal(datetime.now(UTC) + timedelta(seconds=seconds), UTCDateTime)


def now(conn: Connection) -> datetime:
    """The queue's clock, as a value."""
    value = conn.execute(select(now_expr(conn))).scalar_one()
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------- enqueue


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
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = dialect_insert(jobs).on_conflict_do_nothing(
            index_elements=["source_uri", "source_sha256", "source_entry", "stage"]
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
        _record(conn, ids, None, jobs.c.state, runner=None, detail=jobs.c.error)
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


def _event_rows(
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


def _record(
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
    rows = _event_rows(jobs, from_state, to_state, now_expr(conn), who, det)
    conn.execute(insert(job_events).from_select(EVENT_COLUMNS, rows.where(jobs.c.id.in_(ids))))


# ---------------------------------------------------------------------------- demand


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
    queued = jobs.c.state == "queued"
    # The next model after ``after`` in the claim index.
    step = text(
        f"SELECT model FROM jobs{_along(conn, 'ix_jobs_claim')}"
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


def _along(conn: Connection, index: str) -> str:
    """`` INDEXED BY index`` on SQLite, whose planner without statistics prefers the state
    index for ``state = 'queued'`` and reads every queued row; nothing on PostgreSQL."""
    return f" INDEXED BY {index}" if conn.dialect.name == "sqlite" else ""


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
    if models is None:
        stmt = text(
            f"SELECT (SELECT run_after FROM jobs{_along(conn, 'ix_jobs_run_after')}"
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
            f"SELECT (SELECT min(run_after) FROM jobs{_along(conn, 'ix_jobs_claim')}"
            " WHERE state = 'queued' AND model IN :models),"
            " EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND model IN :models)"
        ).bindparams(bindparam("models", expanding=True))
        params = {"models": sorted(models)}
    value, busy = conn.execute(stmt, params).one()
    return Outlook(UTCDateTime().process_result_value(value, conn.dialect), bool(busy))


# ---------------------------------------------------------------------------- claim


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


def _clock(dialect: str) -> ColumnElement[datetime]:
    """now(): the server's on PostgreSQL, the caller's ``:now`` on SQLite (one host)."""
    if dialect == "postgresql":
        return func.now()
    return bindparam("now", type_=UTCDateTime)


def _clock_plus(dialect: str, name: str) -> ColumnElement[datetime]:
    """now() + ``:name`` seconds (given as a timedelta in the parameters)."""
    if dialect == "postgresql":
        return func.now() + bindparam(name, type_=Interval)
    return bindparam(f"{name}_at", type_=UTCDateTime)


def _hot_params(conn: Connection, **values: Any) -> dict[str, Any]:
    """Parameters of a prebuilt statement; on SQLite also the clock values it binds."""
    if conn.dialect.name != "postgresql":
        clock = datetime.now(UTC)
        values["now"] = clock
        for key, value in list(values.items()):
            if isinstance(value, timedelta):
                values[f"{key}_at"] = clock + value
    return values


# The runner and detail of a prebuilt statement's events, bound per call.
_WHO_WHY = (bindparam("p_owner", type_=String), bindparam("p_detail", type_=String))


def _with_events(dialect: str, moved: Any, from_state: str | None, to_state: str) -> Any:
    """``moved`` (an UPDATE ... RETURNING id, attempts, ...) plus its events: on
    PostgreSQL one statement; on SQLite the UPDATE alone (``_record_moved`` follows)."""
    if dialect != "postgresql":
        return moved
    rows = moved.cte("moved")
    events = insert(job_events).from_select(
        EVENT_COLUMNS, _event_rows(rows, from_state, to_state, _clock(dialect), *_WHO_WHY)
    )
    return select(rows).add_cte(events.cte("events"))


@functools.cache
def _claim_stmt(dialect: str) -> Any:
    pick = (
        select(jobs.c.id)
        .where(
            jobs.c.state == "queued",
            jobs.c.model == bindparam("p_model"),
            jobs.c.run_after <= _clock(dialect),
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
            lease_expires_at=_clock_plus(dialect, "lease"),
            attempts=jobs.c.attempts + 1,
            started_at=_clock(dialect),
            outputs_uri=bindparam("outputs_root", type_=String) + cast(jobs.c.id, String),
        )
        .returning(*(jobs.c[name] for name in CLAIMED))
    )
    return _with_events(dialect, moved, "queued", "running")


@functools.cache
def _record_moved_stmt(dialect: str, from_state: str | None, to_state: str) -> Any:
    rows = _event_rows(jobs, from_state, to_state, _clock(dialect), *_WHO_WHY)
    return insert(job_events).from_select(
        EVENT_COLUMNS, rows.where(jobs.c.id.in_(bindparam("moved_ids", expanding=True)))
    )


def _run_moving(
    conn: Connection,
    stmt: Any,
    params: dict[str, Any],
    from_state: str | None,
    to_state: str,
) -> list[Any]:
    """Run a prebuilt state-moving statement and make sure its events are written;
    returns its rows as dicts."""
    params.setdefault("p_detail", None)
    if conn.dialect.name == "postgresql":  # the events are in the statement
        return driver_rows(conn, stmt, params)
    rows = [dict(r._mapping) for r in conn.execute(stmt, _hot_params(conn, **params))]
    if rows:
        conn.execute(
            _record_moved_stmt(conn.dialect.name, from_state, to_state),
            _hot_params(
                conn, moved_ids=[r["id"] for r in rows], p_owner=params.get("p_owner"),
                p_detail=params["p_detail"],
            ),
        )  # fmt: skip
    return rows


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
    rows = _run_moving(
        conn,
        _claim_stmt(conn.dialect.name),
        {"p_model": model, "p_limit": limit, "p_owner": owner, "lease": timedelta(seconds=lease_s),
         "outputs_root": outputs_root},
        "queued",
        "running",
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


def _ids_in(dialect: str) -> ColumnElement[bool]:
    """``id`` among the list bound as ``ids``: one array parameter on PostgreSQL (one
    statement text whatever the batch size, nothing re-rendered per call), an expanded
    IN list on SQLite."""
    if dialect == "postgresql":
        return jobs.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(BigInteger)))
    return jobs.c.id.in_(bindparam("ids", expanding=True))


@functools.cache
def _move_held_stmt(dialect: str, to: str, extra: tuple[str, ...]) -> Any:
    """Move the listed jobs this runner still holds to ``to`` and clear their lease."""
    values: dict[str, Any] = {"state": to, "lease_owner": None, "lease_expires_at": None}
    for name in extra:
        if name == "finished_at":
            values[name] = _clock(dialect)
        elif name == "error":
            values[name] = None
        elif name == "give_back":  # release: the attempt did not happen; runnable now
            values.update(attempts=jobs.c.attempts - 1, run_after=_clock(dialect))
        elif name == "later":  # ... runnable again only after :delay
            values["run_after"] = _clock_plus(dialect, "delay")
    moved = (
        update(jobs)
        .where(_ids_in(dialect), _held(bindparam("p_owner")))
        .values(**values)
        .returning(jobs.c.id, jobs.c.attempts)
    )
    return _with_events(dialect, moved, "running", to)


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
    rows = _run_moving(conn, _move_held_stmt(conn.dialect.name, to, extra), params, "running", to)
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
    _record(conn, [job_id], "running", row.state, runner=owner, detail=detail or error)
    if row.state == "failed" and row.stage < row.stages - 1:
        end_descendants(conn, [job_id])
    return str(row.state)


# ---------------------------------------------------------------------------- chains


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
            _record(conn, [child.id], "waiting", "queued", runner=None,
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
            _record(conn, [child.id], "waiting", to, runner=None, detail=reason)
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


# ---------------------------------------------------------------------------- read


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
        _record(
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


# ---------------------------------------------------------------------------- admin

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
        _record(conn, group, state, to, runner=None, detail=detail)
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
            _record(conn, group, state, "waiting", runner=None,
                    detail="an earlier stage was retried")  # fmt: skip
        frontier = [r.id for r in later]
