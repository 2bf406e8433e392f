"""Queue throughput: the full job lifecycle against the database's raw claim ceiling.

    GEN3D_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/postgres python -m bench.queue --json
    python -m bench.queue            # SQLite (a scratch file)

The phases run in one invocation on a scratch database (a fresh SQLite file, or a
throw-away database created on the named PostgreSQL server), so the ratio compares
like with like. Each starts from the same state: empty tables, vacuumed and analysed
(as autovacuum would leave them between bursts; a server may run without it), then N
fresh jobs. ``--rounds`` (default 5) alternates the three phases and reports the median
of each, since one phase's figure swings by a fifth or more from run to run here:

- lifecycle: N jobs for the no-work model ``builtin-noop``; 4 ``manage.py run``
  processes take them through claim, state events, outputs (manifest, on a RAM-backed
  folder: this measures the queue, not the disk) and completion. The jobs are
  enqueued once all 4 runners are up and polling, and jobs/s is counted from the
  first claim event to the last succeeded event, so process start-up is not in it.
- queue statements: N fresh jobs; 4 processes send only the queue's own ``claim`` and
  ``finish`` calls (the statements a runner sends, state events included) with nothing
  around them: the most a lifecycle could reach before any work of the runner's own
  (planning, adapters, outputs). Timed like the raw ceiling.
- raw ceiling: N fresh jobs; 4 processes run only the bare claim statement
  (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 32) RETURNING``,
  run the way a runner runs its claim: autocommit on PostgreSQL, inside BEGIN IMMEDIATE
  on SQLite) until nothing is left; jobs/s from the start signal to the last claim
  that took jobs.

Prints the medians ``lifecycle_jobs_per_s`` and ``raw_ceiling_jobs_per_s``, their
``ratio``, ``statements_jobs_per_s`` and its ``statements_ratio`` to the ceiling, every
round's figures, and where each phase's CPU went: microseconds a job of its own
processes and, when the server runs on this machine, of the server.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench import common
from db import queue, runners
from db.engine import Database, create, normalise_url
from db.migrate import upgrade
from db.models import job_events

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
PROCESSES = 4
BATCH = 32


def enqueue(db: Database, n: int, tag: str) -> None:
    """N no-work jobs, committed together: runners see all of them at once."""
    chunk = 2000
    with db.write() as conn:
        for start in range(0, n, chunk):
            jobs = [
                queue.NewJob(task="mesh", model="builtin-noop", source_uri=f"bench://{tag}",
                             source_sha256=f"{start:064x}", source_entry=i,
                             inputs={"prompt": "x"}, params={"sleep_s": 0.0})
                for i in range(min(chunk, n - start))
            ]  # fmt: skip
            queue.enqueue_file(conn, jobs, "/dev/null/")


def runner_env(url: str) -> tuple[dict[str, str], Path]:
    """The environment of a ``manage.py run`` on ``url`` (none of this shell's GEN3D_*
    settings), and its outputs folder: RAM-backed where there is one, since this measures
    the queue, not the disk. The caller removes the folder."""
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    outputs = Path(tempfile.mkdtemp(prefix="gen3d-bench-", dir=shm))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEN3D_")}
    env.update(GEN3D_DATABASE_URL=url, GEN3D_OUTPUTS=str(outputs))
    return env, outputs


def empty(db: Database) -> None:
    with db.write() as conn:
        conn.execute(text("DELETE FROM job_events"))
        conn.execute(text("DELETE FROM jobs"))


def settle(db: Database) -> None:
    """Empty the job tables, then VACUUM and ANALYZE them: the dead rows of the last
    phase do not weigh on the next, and the planner sees the tables as they are."""
    empty(db)
    if db.dialect == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs, job_events"))
        return
    raw = db.engine.raw_connection()  # outside any transaction, as VACUUM needs
    sqlite: Any = raw.driver_connection
    try:
        sqlite.execute("VACUUM")
        sqlite.execute("ANALYZE")
    finally:
        raw.close()


def _cpu_s(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds each process has used so far (Linux /proc; none for one
    that is gone or a system without /proc)."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def _cpu_since(before: dict[int, float], pids: list[int]) -> float:
    """CPU seconds the processes used since ``before`` (one started since: all of it)."""
    return sum(t - before.get(pid, 0.0) for pid, t in _cpu_s(pids).items())


def _server_pids(db: Database) -> list[int]:
    """The PostgreSQL server's processes when it runs on this machine (none for SQLite,
    or for a server elsewhere): where the database's share of the CPU is read."""
    if db.dialect != "postgresql":
        return []
    found = []
    for entry in Path("/proc").glob("[0-9]*/comm"):
        try:
            if entry.read_text().strip() == "postgres":
                found.append(int(entry.parent.name))
        except OSError:
            continue
    return found


def jobs_per_s(db: Database, n: int) -> float:
    """``n`` over the seconds from the first claim event to the last succeeded event:
    the runners' work, without their start-up."""
    with db.read() as conn:
        first, last = conn.execute(
            select(
                func.min(job_events.c.at).filter(job_events.c.to_state == "running"),
                func.max(job_events.c.at).filter(job_events.c.to_state == "succeeded"),
            )
        ).one()
    return n / (_seconds(last) - _seconds(first))


def _lifecycle(url: str, n: int) -> tuple[float, float, float | None]:
    """Jobs/s, and the CPU seconds per job of the runners and of the server."""
    db = Database(create(url))
    settle(db)
    env, outputs = runner_env(url)
    env.update(GEN3D_POLL_INTERVAL_S="0.05")
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "run"], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(PROCESSES)
    ]  # fmt: skip
    try:
        # Like the raw phase's start barrier: the jobs arrive once every runner is up and
        # polling, so one runner's work does not share the CPU with another's imports.
        _until(lambda: len(_read(db, runners.live)) >= PROCESSES, procs)
        enqueue(db, n, "lifecycle")
        pids = [p.pid for p in procs]
        cpu0 = (_cpu_s(pids), _cpu_s(_server_pids(db)))
        # Polled while the runners work, so a cheap question (the first queued row along
        # the run_after index, and whether any row is running), not a count over every
        # finished job.
        _until(lambda: _read(db, _settled), procs)
        server = _server_pids(db)  # with any connection opened meanwhile
        clients_s, server_s = _cpu_since(cpu0[0], pids), _cpu_since(cpu0[1], server)
        done = _read(db, queue.count_by_state).get("succeeded", 0)
        if done != n:
            raise RuntimeError(f"{done} of {n} jobs succeeded")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        shutil.rmtree(outputs, ignore_errors=True)
    rate = jobs_per_s(db, n)
    db.dispose()
    return rate, clients_s / n, server_s / n if server else None


def _read(db: Database, query: Callable[[Connection], T]) -> T:
    with db.read() as conn:
        return query(conn)


def _settled(conn: Connection) -> bool:
    """No job queued or running."""
    left = queue.outlook(conn)
    return left.next_run_after is None and not left.any_running


def _until(cond: Any, procs: list[subprocess.Popen[bytes]], timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a runner exited early")
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.2)


def _seconds(t: Any) -> float:
    from datetime import datetime

    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.timestamp()


RAW_PG = """
UPDATE jobs SET state = 'running', lease_owner = :owner
WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND model = 'builtin-noop'
             ORDER BY priority DESC, id LIMIT :n FOR UPDATE SKIP LOCKED)
RETURNING id
"""
RAW_SQLITE = RAW_PG.replace(" FOR UPDATE SKIP LOCKED", "")


def _claim_worker(
    url: str,
    owner: str,
    mode: str,
    start: Any,
    finish: Any,
    counts: Any,
    ends: Any,
    cpus: Any,
    index: int,
) -> None:
    """Claim until nothing is left: ``raw``, the bare claim statement; ``statements``, the
    queue's own ``claim`` and ``finish`` calls, each the way the runner sends it."""
    db = Database(create(url, pool=True))
    stmt = text(RAW_PG if db.dialect == "postgresql" else RAW_SQLITE)
    start.wait()
    cpu0 = time.process_time()
    claimed = 0
    while True:
        # The way a runner claims: one statement, autocommit on PostgreSQL.
        with db.statement() as conn:
            if mode == "raw":
                got = [r[0] for r in conn.execute(stmt, {"owner": owner, "n": BATCH})]
            else:
                got = [r["id"] for r in queue.claim(conn, model="builtin-noop", limit=BATCH,
                       owner=owner, lease_s=600, outputs_root="/dev/null/")]  # fmt: skip
        if not got:
            break
        if mode == "statements":
            with db.statement() as conn:
                queue.finish(conn, got, owner=owner)
        claimed += len(got)
        ends[index] = time.monotonic()  # the last claim that took jobs (and its finish)
        cpus[index] = time.process_time() - cpu0
    counts[index] = claimed
    finish.wait()  # connected until the server's CPU is read: its backend goes with it
    db.dispose()


def _claimers(url: str, n: int, mode: str) -> tuple[float, float, float | None]:
    """Jobs/s, and the CPU seconds per job of the claiming processes and of the server."""
    db = Database(create(url))
    settle(db)
    enqueue(db, n, mode)
    db.dispose()
    ctx = mp.get_context("spawn")
    start, finish = ctx.Event(), ctx.Event()
    counts = ctx.Array("i", [-1] * PROCESSES)  # -1: still claiming
    ends = ctx.Array("d", PROCESSES)
    cpus = ctx.Array("d", PROCESSES)
    procs = [
        ctx.Process(target=_claim_worker,
                    args=(url, f"{mode}{i}", mode, start, finish, counts, ends, cpus, i))
        for i in range(PROCESSES)
    ]  # fmt: skip
    for p in procs:
        p.start()
    time.sleep(2.0)  # let them import and connect
    server = _server_pids(db)
    server_cpu0 = _cpu_s(server)
    t0 = time.monotonic()
    start.set()
    while any(c < 0 for c in counts[:]) and any(p.is_alive() for p in procs):
        time.sleep(0.01)
    server_s = _cpu_since(server_cpu0, _server_pids(db))
    finish.set()
    for p in procs:
        p.join()
    # Up to the last claim that took jobs, as the lifecycle counts up to the last
    # success: the workers' exit is no more in it than the runners' start-up.
    elapsed = max(ends[:]) - t0
    if sum(counts[:]) != n:
        raise RuntimeError(f"{mode} claims took {sum(counts[:])} of {n} jobs")
    return n / elapsed, sum(cpus[:]) / n, server_s / n if server else None


def scratch(url: str | None) -> tuple[str, Any]:
    """A fresh database of the kind ``url`` names, and a function that removes it."""
    if not url or make_url(url).get_backend_name() == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="gen3d-bench-"))
        return f"sqlite:///{folder / 'bench.sqlite3'}", lambda: shutil.rmtree(
            folder, ignore_errors=True
        )
    admin_url = normalise_url(url)
    name = f"gen3d_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def run(n: int, rounds: int = 5) -> dict[str, Any]:
    url, drop = scratch(os.environ.get("GEN3D_DATABASE_URL"))
    phases: dict[str, list[tuple[float, float, float | None]]] = {
        "lifecycle": [], "statements": [], "raw": [],
    }  # fmt: skip
    try:
        db = Database(create(url))
        upgrade(db)
        db.dispose()
        for _ in range(rounds):  # alternated, so a slow spell of the machine hits all
            phases["lifecycle"].append(_lifecycle(url, n))
            phases["statements"].append(_claimers(url, n, "statements"))
            phases["raw"].append(_claimers(url, n, "raw"))
    finally:
        drop()
    mid = {name: statistics.median(r[0] for r in got) for name, got in phases.items()}
    lifecycle, statements, raw = phases["lifecycle"], phases["statements"], phases["raw"]
    return {
        "database": make_url(url).get_backend_name(),
        "jobs": n,
        "processes": PROCESSES,
        "batch": BATCH,
        "lifecycle_jobs_per_s": round(mid["lifecycle"], 1),
        "raw_ceiling_jobs_per_s": round(mid["raw"], 1),
        "ratio": round(mid["lifecycle"] / mid["raw"], 3),
        # The queue's statements alone (claim and finish with their events, no runner):
        # the most a lifecycle could reach before any work of the runner's own.
        "statements_jobs_per_s": round(mid["statements"], 1),
        "statements_ratio": round(mid["statements"] / mid["raw"], 3),
        # Where the CPU goes (medians, microseconds a job): the processes of the phase,
        # and the server when it runs on this machine.
        "lifecycle_cpu_us_per_job": _cpu_split(lifecycle, "runners"),
        "statements_cpu_us_per_job": _cpu_split(statements, "clients"),
        "raw_cpu_us_per_job": _cpu_split(raw, "claimers"),
        "rounds": [
            {
                "lifecycle_jobs_per_s": round(a[0], 1),
                "statements_jobs_per_s": round(b[0], 1),
                "raw_ceiling_jobs_per_s": round(c[0], 1),
                "ratio": round(a[0] / c[0], 3),
            }
            for a, b, c in zip(lifecycle, statements, raw, strict=True)
        ],  # fmt: skip
    }


def _cpu_split(rounds: list[tuple[float, float, float | None]], clients: str) -> dict[str, Any]:
    split: dict[str, Any] = {clients: round(statistics.median(r[1] for r in rounds) * 1e6, 1)}
    server = [r[2] for r in rounds if r[2] is not None]
    if server:
        split["server"] = round(statistics.median(server) * 1e6, 1)
    return split


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="phases of each kind, alternated")
    args = parser.parse_args()
    result = run(args.jobs, args.rounds)
    common.emit(result, as_json=args.json)


if __name__ == "__main__":
    main()
