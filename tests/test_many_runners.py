"""Many runner processes on one database: no double claims, and a SIGKILLed runner's
jobs come back and each job succeeds exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import signal
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from db.engine import Database
from db.models import job_events
from tests.test_leases import _enqueue, _log, _runner, _states, _wait


def _events_per_job(db: Database, to_state: str) -> dict[int, int]:
    with db.read() as conn:
        return dict(
            conn.execute(
                select(job_events.c.job_id, func.count())
                .where(job_events.c.to_state == to_state)
                .group_by(job_events.c.job_id)
            ).all()
        )


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
    ids = _enqueue(db, 20_000)
    # A lease no heartbeat misses: 8 processes on a small machine can starve one for
    # longer than the other tests' 1.5 s, and a job reaped and claimed again is a
    # lease doing its work (tested below), not the double claim this test looks for.
    procs = [_runner(db_url, "--until-idle", lease_s=60) for _ in range(8)]
    for p in procs:
        assert p.wait(timeout=900) == 0, _log(p)
    claims = _events_per_job(db, "running")
    assert len(claims) == len(ids) and set(claims.values()) == {1}  # zero double claims
    assert set(_events_per_job(db, "succeeded").values()) == {1}
    assert _states(db) == {"succeeded": len(ids)}


def test_sigkill_mid_batch_loses_nothing_and_succeeds_each_job_once(
    db: Database, db_url: str
) -> None:
    ids = _enqueue(db, 2_000, sleep_s=0.003)
    procs = [_runner(db_url, "--until-idle") for _ in range(4)]
    _wait(lambda: _states(db).get("succeeded", 0) > 100)
    time.sleep(random.uniform(0.0, 1.0))  # a random moment
    # The victim is a runner holding a batch right now (a fast runner can get through
    # the first hundred jobs while another is still importing: killing that one would
    # test nothing).
    by_pid = {p.pid: p for p in procs}
    held_at_death = 0
    while not held_at_death:  # it may finish its batch between our look and the kill
        holders: list[int] = []
        _wait(lambda: bool(holders.extend(_holding_pids(db)) or holders))  # noqa: B023
        victim = by_pid.pop(random.choice(holders))
        procs.remove(victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = datetime.now(UTC)
        held_at_death = _holding_pids(db).count(victim.pid)
        procs.append(_runner(db_url, "--until-idle"))
    for p in procs:
        assert p.wait(timeout=600) == 0, _log(p)
    assert _states(db) == {"succeeded": len(ids)}
    assert _events_per_job(db, "succeeded") == {i: 1 for i in ids}  # exactly once each
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
