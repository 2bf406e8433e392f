"""No-work jobs (``builtin-noop``) on a test database, and what tests read of them: the
queue's own calls, in the few shapes the lease, admin and many-runner tests share."""

from __future__ import annotations

from sqlalchemy import func, select

from db import queue
from db.engine import Database
from db.models import job_events

OUT = "/out/"


def enqueue_noop(
    db: Database, n: int, *, sleep_s: float = 0.0, uri: str = "file:///t.json"
) -> list[int]:
    jobs = [
        queue.NewJob(task="mesh", model="builtin-noop", source_uri=uri, source_sha256="ab" * 32,
                     source_entry=i, params={"sleep_s": sleep_s}, inputs={"prompt": "x"})
        for i in range(n)
    ]  # fmt: skip
    with db.write() as conn:
        return [e.id for e in queue.enqueue_file(conn, jobs, OUT)]


def claim_noop(db: Database, owner: str, n: int, lease_s: float = 60) -> list[int]:
    with db.write() as conn:
        got = queue.claim(
            conn, model="builtin-noop", limit=n, owner=owner, lease_s=lease_s, outputs_root=OUT
        )
    return [j["id"] for j in got]


def state_counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return queue.count_by_state(conn)


def events_per_job(db: Database, to_state: str) -> dict[int, int]:
    """{job id: how many times it entered ``to_state``}."""
    with db.read() as conn:
        return dict(
            conn.execute(
                select(job_events.c.job_id, func.count())
                .where(job_events.c.to_state == to_state)
                .group_by(job_events.c.job_id)
            ).all()
        )
