"""A runner survives its PostgreSQL server restarting mid-run: nothing lost, nothing run
twice to success (needs a local cluster this machine controls: pg_ctlcluster). A runner
whose SQLite file is deleted or replaced under it stops instead of carrying on."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.engine import Database, create
from db.migrate import upgrade
from tests.noop_jobs import enqueue_noop, events_per_job, state_counts
from tests.processes import runner_log, start_runner, wait_until


def _restart_local_postgres() -> None:
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*"))
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def _postmaster_start(db: Database) -> object:
    with db.read() as conn:
        return conn.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    """The PostgreSQL test database only, emptied (this test has no SQLite variant)."""
    db = Database(create(pg_url))
    with db.write() as conn:
        conn.execute(text("TRUNCATE job_events, jobs, runners RESTART IDENTITY CASCADE"))
    yield db
    db.dispose()


def test_runner_rides_out_a_postgresql_restart(pg_url: str, pg_db: Database) -> None:
    db, db_url = pg_db, pg_url
    host = make_url(pg_url).host
    if host not in ("127.0.0.1", "localhost") or not shutil.which("pg_ctlcluster"):
        pytest.skip("the PostgreSQL server is not a local cluster this machine controls")
    ids = enqueue_noop(db, 300, sleep_s=0.02)
    proc = start_runner(db_url, "--until-idle")
    wait_until(lambda: state_counts(db).get("succeeded", 0) >= 50)
    started_before = _postmaster_start(db)
    _restart_local_postgres()
    assert _postmaster_start(db) > started_before  # the server really went away
    assert state_counts(db).get("succeeded", 0) < len(ids)  # ... while work was outstanding
    assert proc.wait(timeout=240) == 0, runner_log(proc)
    assert state_counts(db) == {"succeeded": len(ids)}
    assert events_per_job(db, "succeeded") == {i: 1 for i in ids}


def test_a_claim_on_a_dropped_connection_fails_as_sqlalchemy_does(
    pg_url: str, pg_db: Database
) -> None:
    """The claim and a batch's completion run on the psycopg connection itself
    (``db.engine.driver_rows``): a connection the server dropped must still surface as
    SQLAlchemy's OperationalError (what the runner retries on) and leave the pool, so
    the next claim gets a live one."""
    from sqlalchemy.exc import OperationalError

    from db import queue

    ids = enqueue_noop(pg_db, 3)
    with pg_db.statement() as conn:  # the pooled connection the claim will be given
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = Database(create(pg_url, pool=False))
    with admin.read() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid}).scalar()
    admin.dispose()
    claim = {"model": "builtin-noop", "limit": 2, "owner": "r", "lease_s": 60,
             "outputs_root": "/out/"}  # fmt: skip
    with pytest.raises(OperationalError) as caught, pg_db.statement() as conn:
        queue.claim(conn, **claim)  # type: ignore[arg-type]
    assert caught.value.connection_invalidated
    with pg_db.statement() as conn:
        got = queue.claim(conn, **claim)  # type: ignore[arg-type]
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    assert sorted(j["id"] for j in got) == ids[:2]
    with pg_db.statement() as conn:
        assert queue.finish(conn, ids[:2], owner="r") == ids[:2]
    assert state_counts(pg_db) == {"succeeded": 2, "queued": 1}


def _sqlite_db(path: Path) -> tuple[Database, str]:
    url = f"sqlite:///{path}"
    db = Database(create(url))
    upgrade(db)
    return db, url


def _remove_sqlite(path: Path) -> None:
    """As an admin's ``rm var/gen3d.sqlite3*`` would."""
    for p in path.parent.glob(path.name + "*"):
        p.unlink()


def _runner_done_with_two_jobs(path: Path) -> subprocess.Popen[bytes]:
    """A runner on a fresh SQLite file at ``path`` that has run two jobs, still running."""
    db, url = _sqlite_db(path)
    enqueue_noop(db, 2)
    proc = start_runner(url)
    wait_until(lambda: state_counts(db) == {"succeeded": 2})
    db.dispose()
    return proc


def test_a_runner_whose_sqlite_file_is_deleted_stops_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "gen3d.sqlite3"
    proc = _runner_done_with_two_jobs(path)
    _remove_sqlite(path)
    assert proc.wait(timeout=30) == 1, runner_log(proc)
    assert (
        f"database file {path} was deleted while this process used it; stopping so that no"
        " outputs are overwritten"
    ) in runner_log(proc)


def test_a_runner_whose_sqlite_file_is_replaced_by_a_fresh_database_stops(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gen3d.sqlite3"
    proc = _runner_done_with_two_jobs(path)
    fresh, _ = _sqlite_db(tmp_path / "fresh.sqlite3")
    fresh.dispose()
    _remove_sqlite(path)
    os.replace(tmp_path / "fresh.sqlite3", path)
    assert proc.wait(timeout=30) == 1, runner_log(proc)
    assert (
        f"database file {path} was replaced by another file while this process used it;"
        " stopping so that no outputs are overwritten"
    ) in runner_log(proc)
