"""Queue throughput: the full job lifecycle against the database's raw claim ceiling.

    GEN3D_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/postgres python -m bench.queue --json
    python -m bench.queue            # SQLite (a scratch file)

Both phases run in one invocation on a scratch database (a fresh SQLite file, or a
throw-away database created on the named PostgreSQL server), so the ratio compares
like with like:

- lifecycle: N jobs for the no-work model ``builtin-noop``; 4 ``manage.py run``
  processes take them through claim, state events, outputs (manifest, on a RAM-backed
  folder: this measures the queue, not the disk) and completion. The jobs are
  enqueued once all 4 runners are up and polling, and jobs/s is counted from the
  first claim event to the last succeeded event, so process start-up is not in it.
- raw ceiling: N fresh jobs; 4 processes run only the bare claim statement
  (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 32) RETURNING``,
  run the way a runner runs its claim: autocommit on PostgreSQL, inside BEGIN IMMEDIATE
  on SQLite) until nothing is left.

Prints ``lifecycle_jobs_per_s``, ``raw_ceiling_jobs_per_s`` and ``ratio``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench import common
from db import queue
from db.engine import Database, create, normalise_url
from db.migrate import upgrade
from db.models import job_events

ROOT = Path(__file__).resolve().parent.parent
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


def _lifecycle(url: str, n: int) -> float:
    db = Database(create(url))
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
        _until(lambda: _count(db, "SELECT count(*) FROM runners WHERE state = 'running'")
               >= PROCESSES, procs)  # fmt: skip
        enqueue(db, n, "lifecycle")
        _until(lambda: _count(db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") >= n,
               procs)  # fmt: skip
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        shutil.rmtree(outputs, ignore_errors=True)
    rate = jobs_per_s(db, n)
    db.dispose()
    return rate


def _count(db: Database, sql: str) -> int:
    with db.read() as conn:
        return int(conn.execute(text(sql)).scalar_one())


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


def _raw_worker(url: str, owner: str, start: Any, counts: Any, index: int) -> None:
    db = Database(create(url, pool=True))
    stmt = text(RAW_PG if db.dialect == "postgresql" else RAW_SQLITE)
    start.wait()
    claimed = 0
    while True:
        # The way a runner claims: one statement, autocommit on PostgreSQL.
        with db.statement() as conn:
            got = len(conn.execute(stmt, {"owner": owner, "n": BATCH}).all())
        if not got:
            break
        claimed += got
    counts[index] = claimed
    db.dispose()


def _raw_ceiling(url: str, n: int) -> float:
    db = Database(create(url))
    empty(db)
    enqueue(db, n, "raw")
    db.dispose()
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    counts = ctx.Array("i", PROCESSES)
    procs = [
        ctx.Process(target=_raw_worker, args=(url, f"raw{i}", start, counts, i))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let them import and connect
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    if sum(counts) != n:
        raise RuntimeError(f"raw claims took {sum(counts)} of {n} jobs")
    return n / elapsed


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


def run(n: int) -> dict[str, Any]:
    url, drop = scratch(os.environ.get("GEN3D_DATABASE_URL"))
    try:
        db = Database(create(url))
        upgrade(db)
        db.dispose()
        lifecycle = _lifecycle(url, n)
        raw = _raw_ceiling(url, n)
    finally:
        drop()
    return {
        "database": make_url(url).get_backend_name(),
        "jobs": n,
        "processes": PROCESSES,
        "batch": BATCH,
        "lifecycle_jobs_per_s": round(lifecycle, 1),
        "raw_ceiling_jobs_per_s": round(raw, 1),
        "ratio": round(lifecycle / raw, 3),
    }


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    result = run(args.jobs)
    common.emit(result, as_json=args.json)


if __name__ == "__main__":
    main()
