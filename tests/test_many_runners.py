"""Many runner processes on one database: no double claims, and a SIGKILLed runner's
jobs come back and each job succeeds exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import signal
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from db.engine import Database
from db.models import job_events
from tests.noop_jobs import enqueue_noop, events_per_job, state_counts
from tests.processes import runner_log, start_runner, wait_until


def _holding_pids(db: Database) -> list[int]:
    """Pids of the runners that hold running jobs now."""
    with db.read() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT DISTINCT r.pid FROM jobs j JOIN runners r ON r.id = j.lease_owner"
                    " WHERE j.state = 'running'"
                )
            ).scalars()
        )


def test_eight_runners_over_20000_jobs_never_claim_a_job_twice(db: Database, db_url: str) -> None:
    ids = enqueue_noop(db, 20_000)
    # A lease no heartbeat misses: 8 processes on a small machine can starve one for
    # longer than the other tests' 1.5 s, and a job reaped and claimed again is a
    # lease doing its work (tested below), not the double claim this test looks for.
    procs = [start_runner(db_url, "--until-idle", lease_s=60) for _ in range(8)]
    for p in procs:
        assert p.wait(timeout=900) == 0, runner_log(p)
    claims = events_per_job(db, "running")
    assert len(claims) == len(ids) and set(claims.values()) == {1}  # zero double claims
    assert set(events_per_job(db, "succeeded").values()) == {1}
    assert state_counts(db) == {"succeeded": len(ids)}


def test_sigkill_mid_batch_loses_nothing_and_succeeds_each_job_once(
    db: Database, db_url: str
) -> None:
    ids = enqueue_noop(db, 2_000, sleep_s=0.003)
    procs = [start_runner(db_url, "--until-idle") for _ in range(4)]
    wait_until(lambda: state_counts(db).get("succeeded", 0) > 100)
    time.sleep(random.uniform(0.0, 1.0))  # a random moment
    # The victim is a runner holding a batch right now (a fast runner can get through
    # the first hundred jobs while another is still importing: killing that one would
    # test nothing).
    by_pid = {p.pid: p for p in procs}
    held_at_death = 0
    while not held_at_death:  # it may finish its batch between our look and the kill
        holders: list[int] = []
        wait_until(lambda: bool(holders.extend(_holding_pids(db)) or holders))  # noqa: B023
        victim = by_pid.pop(random.choice(holders))
        procs.remove(victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = datetime.now(UTC)
        held_at_death = _holding_pids(db).count(victim.pid)
        procs.append(start_runner(db_url, "--until-idle"))
    for p in procs:
        assert p.wait(timeout=600) == 0, runner_log(p)
    assert state_counts(db) == {"succeeded": len(ids)}
    assert events_per_job(db, "succeeded") == {i: 1 for i in ids}  # exactly once each
    with db.read() as conn:
        reaped_at = (
            conn.execute(select(job_events.c.at).where(job_events.c.detail.like("lease expired%")))
            .scalars()
            .all()
        )
    assert reaped_at  # the victim held a batch; it came back through the reaper
    # Back within one lease (1.5 s), plus a reaper interval (0.3 s) and slack for a
    # busy 2-core machine.
    assert max(reaped_at) - killed_at < timedelta(seconds=1.5 + 0.3 + 2.0)
