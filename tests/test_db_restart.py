"""A runner survives its PostgreSQL server restarting mid-run: nothing lost, nothing run
twice to success. Needs a local cluster this machine controls (pg_ctlcluster)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.engine import Database, create
from tests.test_leases import _enqueue, _log, _runner, _states, _wait
from tests.test_many_runners import _events_per_job


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
    ids = _enqueue(db, 300, sleep_s=0.02)
    proc = _runner(db_url, "--until-idle")
    _wait(lambda: _states(db).get("succeeded", 0) >= 50)
    started_before = _postmaster_start(db)
    _restart_local_postgres()
    assert _postmaster_start(db) > started_before  # the server really went away
    assert _states(db).get("succeeded", 0) < len(ids)  # ... while work was outstanding
    assert proc.wait(timeout=240) == 0, _log(proc)
    assert _states(db) == {"succeeded": len(ids)}
    assert _events_per_job(db, "succeeded") == {i: 1 for i in ids}
