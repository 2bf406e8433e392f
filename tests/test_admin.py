"""Admin actions: cancel and retry, on both databases and against a live runner."""

from __future__ import annotations

import os
import subprocess
import sys

from db import queue
from db.engine import Database
from tests.noop_jobs import OUT, claim_noop, enqueue_noop, state_counts
from tests.processes import ROOT, start_runner, wait_until


def test_cancelled_queued_job_is_never_claimed(db: Database) -> None:
    (jid,) = enqueue_noop(db, 1)
    with db.write() as conn:
        assert queue.cancel(conn, [jid]) == {jid: (True, "cancelled")}
        evs = queue.events(conn, jid)
    assert claim_noop(db, "r", 1) == []
    assert (evs[-1]["from_state"], evs[-1]["to_state"], evs[-1]["detail"]) == (
        "queued", "cancelled", "cancelled by an admin",
    )  # fmt: skip


def test_cancelled_running_job_cannot_be_finished_by_its_runner(db: Database) -> None:
    (jid,) = enqueue_noop(db, 1)
    claim_noop(db, "r", 1)
    with db.write() as conn:
        assert queue.cancel(conn, [jid]) == {jid: (True, "cancelled")}
        assert queue.renew(conn, [jid], owner="r", lease_s=60) == []  # the heartbeat sees it gone
        assert queue.finish(conn, [jid], owner="r") == []
    assert state_counts(db) == {"cancelled": 1}


def test_finished_or_unknown_jobs_are_not_cancelled(db: Database) -> None:
    (jid,) = enqueue_noop(db, 1)
    claim_noop(db, "r", 1)
    with db.write() as conn:
        queue.finish(conn, [jid], owner="r")
        assert queue.cancel(conn, [jid, 999]) == {
            jid: (False, "succeeded"),
            999: (False, "missing"),
        }


def test_retry_requeues_failed_jobs_with_fresh_attempts(db: Database) -> None:
    (jid,) = enqueue_noop(db, 1)
    claim_noop(db, "r", 1)
    with db.write() as conn:
        queue.fail(conn, jid, owner="r", error="boom", permanent=True, retry_in_s=0)
        assert queue.retry(conn, [jid]) == {jid: (True, "queued")}
        job = queue.get_job(conn, jid)
    assert job is not None and (job["attempts"], job["error"], job["finished_at"]) == (
        0,
        None,
        None,
    )
    assert claim_noop(db, "r2", 1) == [jid]


def test_rejected_jobs_are_not_retried(db: Database) -> None:
    with db.write() as conn:
        (e,) = queue.enqueue_file(
            conn,
            [queue.NewJob(task="mesh", model="?", source_uri="file:///x", source_sha256="0" * 64,
                          state="rejected", error="bad")],
            OUT,
        )  # fmt: skip
        assert queue.retry(conn, [e.id]) == {e.id: (False, "rejected")}


def test_live_runner_abandons_a_job_cancelled_while_it_runs(db: Database, db_url: str) -> None:
    ids = enqueue_noop(db, 3, sleep_s=1.0)
    proc = start_runner(db_url, "--until-idle")
    wait_until(lambda: state_counts(db).get("running", 0) == 3)
    with db.write() as conn:
        queue.cancel(conn, [ids[-1]])  # the last of the batch: still to be run
    assert proc.wait(timeout=60) == 0
    with db.read() as conn:
        states = [queue.get_job(conn, i)["state"] for i in ids]  # type: ignore[index]
        last = [e["to_state"] for e in queue.events(conn, ids[-1])]
    assert states == ["succeeded", "succeeded", "cancelled"]
    assert "succeeded" not in last


def test_cli_cancel_and_retry_report_each_job_and_exit_1_on_refusals(
    db: Database, db_url: str
) -> None:
    (jid,) = enqueue_noop(db, 1)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GEN3D_")},
        "GEN3D_DATABASE_URL": db_url,
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    ok = manage("cancel", str(jid))
    assert ok.returncode == 0 and ok.stdout.split() == [str(jid), "cancelled"]
    refused = manage("cancel", str(jid), "424242")
    assert refused.returncode == 1
    assert "it is cancelled" in refused.stderr and "no such job" in refused.stderr
    assert manage("retry", str(jid)).stdout.split() == [str(jid), "queued"]
