"""Leases, heartbeats, the reaper and shutdown: statements on both databases, then real
runner processes killed and stopped mid-batch."""

from __future__ import annotations

import logging
import signal
import threading
import time

import pytest
from sqlalchemy import func, select, text

from config import Settings
from db import queue, runners
from db.engine import Database, create
from db.migrate import upgrade
from db.models import job_events
from runner.loop import Runner
from tests.noop_jobs import claim_noop, enqueue_noop, state_counts
from tests.processes import runner_log, start_runner, wait_until


def _expire(db: Database) -> None:
    with db.write() as conn:
        conn.execute(text("UPDATE jobs SET lease_expires_at = created_at WHERE state = 'running'"))


def test_renew_extends_only_this_runners_leases(db: Database) -> None:
    enqueue_noop(db, 3)
    mine, theirs = claim_noop(db, "a", 2, lease_s=1), claim_noop(db, "b", 1, lease_s=1)
    with db.write() as conn:
        assert sorted(queue.renew(conn, mine + theirs, owner="a", lease_s=600)) == sorted(mine)
        leases = dict(conn.execute(text("SELECT id, lease_expires_at FROM jobs")).all())
    assert all(str(leases[i]) > str(leases[theirs[0]]) for i in mine)


def test_renew_leaves_jobs_the_runner_does_not_know_it_holds_to_expire(db: Database) -> None:
    """A claim whose reply was lost must not stay leased to a runner unaware of it."""
    enqueue_noop(db, 2)
    known, unknown = claim_noop(db, "a", 2, lease_s=1)
    with db.write() as conn:
        assert queue.renew(conn, [known], owner="a", lease_s=600) == [known]
    time.sleep(1.2)
    with db.write() as conn:
        assert queue.reap(conn, max_runner_deaths=3) == {unknown: "queued"}


def test_reaper_requeues_jobs_whose_lease_expired_and_counts_the_death(db: Database) -> None:
    (jid,) = enqueue_noop(db, 1)
    claim_noop(db, "dead-runner", 1)
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
    enqueue_noop(db, 1)
    claim_noop(db, "alive", 1)
    with db.write() as conn:
        assert queue.reap(conn, max_runner_deaths=3) == {}
    assert state_counts(db) == {"running": 1}


def test_job_whose_runner_died_n_times_ends_failed(db: Database) -> None:
    (jid,) = enqueue_noop(db, 1)
    for n in range(3):
        claim_noop(db, f"runner{n}", 1)
        _expire(db)
        with db.write() as conn:
            state = queue.reap(conn, max_runner_deaths=3)[jid]
    assert state == "failed"
    with db.read() as conn:
        job = queue.get_job(conn, jid)
    assert job is not None and job["error"] == "its runner died 3 times"


def test_release_hands_jobs_back_without_counting_the_attempt(db: Database) -> None:
    ids = enqueue_noop(db, 2)
    claim_noop(db, "r", 2)
    with db.write() as conn:
        assert sorted(queue.release(conn, ids, owner="r", reason="shutdown")) == sorted(ids)
        assert queue.release(conn, ids, owner="r", reason="again") == []
    with db.read() as conn:
        assert {queue.get_job(conn, i)["attempts"] for i in ids} == {0}  # type: ignore[index]
    assert state_counts(db) == {"queued": 2}


def test_postpone_hands_jobs_back_after_the_back_off_without_counting_the_attempt(
    db: Database,
) -> None:
    ids = enqueue_noop(db, 2)
    claim_noop(db, "r", 2)
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
    assert claim_noop(db, "r", 2) == []  # not before the back-off


def test_a_job_taken_from_a_runner_is_reported_once_not_at_every_beat(
    sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = sqlite_settings.model_copy(
        update={"runner": sqlite_settings.runner.model_copy(
            update={"heartbeat_s": 0.05, "poll_interval_s": 0.02})}
    )  # fmt: skip
    db = Database(create(settings.database_url))
    upgrade(db)
    (jid,) = enqueue_noop(db, 1, sleep_s=1.5)
    runner = Runner(settings, db)
    caplog.set_level(logging.WARNING, logger="gen3d.runner")
    worker = threading.Thread(target=runner.run, kwargs={"until_idle": True})
    worker.start()
    wait_until(lambda: state_counts(db).get("running", 0) == 1)
    with db.write() as conn:
        queue.cancel(conn, [jid])
    worker.join(timeout=30)
    taken = [r for r in caplog.records if "taken from this runner" in r.getMessage()]
    assert [r.getMessage() for r in taken] == [
        f"jobs [{jid}] were taken from this runner; abandoning them"
    ]
    assert state_counts(db) == {"cancelled": 1}


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


def test_killed_runners_jobs_come_back_and_each_succeeds_exactly_once(
    db: Database, db_url: str
) -> None:
    ids = enqueue_noop(db, 12, sleep_s=0.4)
    victim = start_runner(db_url)
    wait_until(lambda: state_counts(db).get("running", 0) > 0)
    time.sleep(0.5)  # mid-batch
    victim.kill()
    victim.wait()
    assert state_counts(db).get("running", 0) > 0  # its leases are still out
    killed_at = time.monotonic()
    rescuer = start_runner(db_url, "--until-idle")
    assert rescuer.wait(timeout=120) == 0, runner_log(rescuer)
    assert time.monotonic() - killed_at < 30
    assert state_counts(db) == {"succeeded": len(ids)}
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
    enqueue_noop(db, 6, sleep_s=0.3)
    proc = start_runner(db_url)
    wait_until(lambda: state_counts(db).get("running", 0) > 0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    states = state_counts(db)
    assert "running" not in states and states.get("succeeded", 0) >= 1
    with db.read() as conn:
        assert conn.execute(text("SELECT state FROM runners")).scalar_one() == "stopped"


def test_second_sigterm_hands_the_batch_back_at_once(db: Database, db_url: str) -> None:
    enqueue_noop(db, 4, sleep_s=5)
    proc = start_runner(db_url)
    wait_until(lambda: state_counts(db).get("running", 0) > 0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert time.monotonic() - t0 < 4  # did not wait for the 5 s job
    assert state_counts(db) == {"queued": 4}
