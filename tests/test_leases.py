"""Leases, heartbeats, the reaper and shutdown: statements on both databases, then real
runner processes killed and stopped mid-batch."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from config import Settings
from db import queue, runners
from db.engine import Database, create
from db.migrate import upgrade
from db.models import job_events
from runner.loop import Runner

ROOT = Path(__file__).resolve().parent.parent
OUT = "/out/"


def _enqueue(
    db: Database, n: int, *, sleep_s: float = 0.0, uri: str = "file:///t.json"
) -> list[int]:
    jobs = [
        queue.NewJob(task="mesh", model="builtin-noop", source_uri=uri, source_sha256="ab" * 32,
                     source_entry=i, params={"sleep_s": sleep_s}, inputs={"prompt": "x"})
        for i in range(n)
    ]  # fmt: skip
    with db.write() as conn:
        return [e.id for e in queue.enqueue_file(conn, jobs, OUT)]


def _claim(db: Database, owner: str, n: int, lease_s: float = 60) -> list[int]:
    with db.write() as conn:
        got = queue.claim(
            conn, model="builtin-noop", limit=n, owner=owner, lease_s=lease_s, outputs_root=OUT
        )
    return [j["id"] for j in got]


def _expire(db: Database) -> None:
    with db.write() as conn:
        conn.execute(text("UPDATE jobs SET lease_expires_at = created_at WHERE state = 'running'"))


def _states(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return queue.count_by_state(conn)


def test_renew_extends_only_this_runners_leases(db: Database) -> None:
    _enqueue(db, 3)
    mine, theirs = _claim(db, "a", 2, lease_s=1), _claim(db, "b", 1, lease_s=1)
    with db.write() as conn:
        assert sorted(queue.renew(conn, mine + theirs, owner="a", lease_s=600)) == sorted(mine)
        leases = dict(conn.execute(text("SELECT id, lease_expires_at FROM jobs")).all())
    assert all(str(leases[i]) > str(leases[theirs[0]]) for i in mine)


def test_renew_leaves_jobs_the_runner_does_not_know_it_holds_to_expire(db: Database) -> None:
    """A claim whose reply was lost must not stay leased to a runner unaware of it."""
    _enqueue(db, 2)
    known, unknown = _claim(db, "a", 2, lease_s=1)
    with db.write() as conn:
        assert queue.renew(conn, [known], owner="a", lease_s=600) == [known]
    time.sleep(1.2)
    with db.write() as conn:
        assert queue.reap(conn, max_runner_deaths=3) == {unknown: "queued"}


def test_reaper_requeues_jobs_whose_lease_expired_and_counts_the_death(db: Database) -> None:
    (jid,) = _enqueue(db, 1)
    _claim(db, "dead-runner", 1)
    _expire(db)
    with db.write() as conn:
        assert queue.reap(conn, max_runner_deaths=3) == {jid: "queued"}
        job = queue.get_job(conn, jid)
        evs = queue.events(conn, jid)
    assert job is not None and job["lost_count"] == 1 and job["lease_owner"] is None
    assert (
        evs[-1]["to_state"] == "queued" and "dead-runner stopped heartbeating" in evs[-1]["detail"]
    )


def test_reaper_leaves_live_leases_alone(db: Database) -> None:
    _enqueue(db, 1)
    _claim(db, "alive", 1)
    with db.write() as conn:
        assert queue.reap(conn, max_runner_deaths=3) == {}
    assert _states(db) == {"running": 1}


def test_job_whose_runner_died_n_times_ends_failed(db: Database) -> None:
    (jid,) = _enqueue(db, 1)
    for n in range(3):
        _claim(db, f"runner{n}", 1)
        _expire(db)
        with db.write() as conn:
            state = queue.reap(conn, max_runner_deaths=3)[jid]
    assert state == "failed"
    with db.read() as conn:
        job = queue.get_job(conn, jid)
    assert job is not None and job["error"] == "its runner died 3 times"


def test_release_hands_jobs_back_without_counting_the_attempt(db: Database) -> None:
    ids = _enqueue(db, 2)
    _claim(db, "r", 2)
    with db.write() as conn:
        assert sorted(queue.release(conn, ids, owner="r", reason="shutdown")) == sorted(ids)
        assert queue.release(conn, ids, owner="r", reason="again") == []
    with db.read() as conn:
        assert {queue.get_job(conn, i)["attempts"] for i in ids} == {0}  # type: ignore[index]
    assert _states(db) == {"queued": 2}


def test_postpone_hands_jobs_back_after_the_back_off_without_counting_the_attempt(
    db: Database,
) -> None:
    ids = _enqueue(db, 2)
    _claim(db, "r", 2)
    why = "outputs unavailable: OSError: [Errno 30] Read-only file system"
    with db.write() as conn:
        assert sorted(queue.postpone(conn, ids, owner="r", reason=why, retry_in_s=60)) == ids
        assert queue.postpone(conn, ids, owner="r", reason=why, retry_in_s=60) == []
        clock = queue.now(conn)
        jobs = [queue.get_job(conn, i) for i in ids]
        last = queue.events(conn, ids[0])[-1]
    assert {(j["state"], j["attempts"]) for j in jobs if j} == {("queued", 0)}
    assert all(j and (j["run_after"] - clock).total_seconds() > 50 for j in jobs)
    assert (last["from_state"], last["to_state"], last["detail"]) == ("running", "queued", why)
    assert _claim(db, "r", 2) == []  # not before the back-off


def test_a_job_taken_from_a_runner_is_reported_once_not_at_every_beat(
    sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = sqlite_settings.model_copy(
        update={"runner": sqlite_settings.runner.model_copy(
            update={"heartbeat_s": 0.05, "poll_interval_s": 0.02})}
    )  # fmt: skip
    db = Database(create(settings.database_url))
    upgrade(db)
    (jid,) = _enqueue(db, 1, sleep_s=1.5)
    runner = Runner(settings, db)
    caplog.set_level(logging.WARNING, logger="gen3d.runner")
    worker = threading.Thread(target=runner.run, kwargs={"until_idle": True})
    worker.start()
    _wait(lambda: _states(db).get("running", 0) == 1)
    with db.write() as conn:
        queue.cancel(conn, [jid])
    worker.join(timeout=30)
    taken = [r for r in caplog.records if "taken from this runner" in r.getMessage()]
    assert [r.getMessage() for r in taken] == [
        f"jobs [{jid}] were taken from this runner; abandoning them"
    ]
    assert _states(db) == {"cancelled": 1}


def test_silent_runner_is_declared_gone_and_a_beating_one_is_not(db: Database) -> None:
    with db.write() as conn:
        runners.register(conn, "silent")
        runners.register(conn, "beating")
        conn.execute(
            text("UPDATE runners SET heartbeat_at = started_at - (started_at - started_at)")
        )
    time.sleep(1.1)
    with db.write() as conn:
        assert runners.beat(conn, "beating", resident=["m"])
        assert runners.mark_gone(conn, silent_s=1.0) == ["silent"]
        assert not runners.beat(conn, "silent", resident=[])  # a gone runner stays gone
        assert [r["id"] for r in runners.live(conn)] == ["beating"]


# ---------------------------------------------------------------------------- processes


def _runner(db_url: str, *args: str, lease_s: float = 1.5) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEN3D_")}
    outputs = tempfile.mkdtemp(prefix="gen3d-runner-out-")  # never the repository's var/
    env.update(GEN3D_DATABASE_URL=db_url, GEN3D_OUTPUTS=outputs, GEN3D_LEASE_S=str(lease_s),
               GEN3D_HEARTBEAT_S="0.3", GEN3D_REAP_INTERVAL_S="0.3",
               GEN3D_POLL_INTERVAL_S="0.05")  # fmt: skip
    # stderr to a file, not a pipe: a runner logs a line per job, and an unread pipe
    # fills up and blocks it.
    fd, log_path = tempfile.mkstemp(prefix="gen3d-runner-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run", *args], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    LOGS[proc.pid] = Path(log_path)
    STARTED.append(proc)
    return proc


LOGS: dict[int, Path] = {}
STARTED: list[subprocess.Popen[str]] = []


def _log(proc: subprocess.Popen[str], tail: int | None = 3000) -> str:
    """A runner's log (its tail by default, for assertion messages)."""
    text = LOGS[proc.pid].read_text()
    return text if tail is None else text[-tail:]


def _wait(cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_killed_runners_jobs_come_back_and_each_succeeds_exactly_once(
    db: Database, db_url: str
) -> None:
    ids = _enqueue(db, 12, sleep_s=0.4)
    victim = _runner(db_url)
    _wait(lambda: _states(db).get("running", 0) > 0)
    time.sleep(0.5)  # mid-batch
    victim.kill()
    victim.wait()
    assert _states(db).get("running", 0) > 0  # its leases are still out
    killed_at = time.monotonic()
    rescuer = _runner(db_url, "--until-idle")
    assert rescuer.wait(timeout=120) == 0, _log(rescuer)
    assert time.monotonic() - killed_at < 30
    assert _states(db) == {"succeeded": len(ids)}
    with db.read() as conn:
        per_job = dict(
            conn.execute(
                select(job_events.c.job_id, func.count())
                .where(job_events.c.to_state == "succeeded")
                .group_by(job_events.c.job_id)
            ).all()
        )
        states = {
            r["id"]: r["state"]
            for r in conn.execute(text("SELECT id, state FROM runners")).mappings()
        }
    assert per_job == {i: 1 for i in ids}
    assert sorted(states.values()) == ["gone", "stopped"]


def test_sigterm_finishes_the_batch_then_stops(db: Database, db_url: str) -> None:
    _enqueue(db, 6, sleep_s=0.3)
    proc = _runner(db_url)
    _wait(lambda: _states(db).get("running", 0) > 0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    states = _states(db)
    assert "running" not in states and states.get("succeeded", 0) >= 1
    with db.read() as conn:
        assert conn.execute(text("SELECT state FROM runners")).scalar_one() == "stopped"


def test_second_sigterm_hands_the_batch_back_at_once(db: Database, db_url: str) -> None:
    _enqueue(db, 4, sleep_s=5)
    proc = _runner(db_url)
    _wait(lambda: _states(db).get("running", 0) > 0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert time.monotonic() - t0 < 4  # did not wait for the 5 s job
    assert _states(db) == {"queued": 4}
