"""The queue's statements, specified once and run against SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from db import queue
from db.engine import Database
from db.migrate import current_revision, head_revision

OUT = "/out/"


def _jobs(
    n: int, *, model: str = "m", uri: str = "file:///inbox/a.json", **kw: object
) -> list[queue.NewJob]:
    return [
        queue.NewJob(
            task="mesh", model=model, source_uri=uri, source_sha256="ab" * 32, source_entry=i, **kw
        )  # type: ignore[arg-type]
        for i in range(n)
    ]


def test_schema_is_at_head(db: Database) -> None:
    assert current_revision(db) == head_revision()


def test_enqueue_is_idempotent_on_source_and_content(db: Database) -> None:
    with db.write() as conn:
        first = queue.enqueue_file(conn, _jobs(3), OUT)
    with db.write() as conn:
        again = queue.enqueue_file(conn, _jobs(3), OUT)
    assert [e.created for e in first] == [True, True, True]
    assert [e.created for e in again] == [False, False, False]
    assert [e.id for e in again] == [e.id for e in first]
    with db.read() as conn:
        assert queue.count_by_state(conn) == {"queued": 3}


def test_same_file_with_new_content_is_a_new_job(db: Database) -> None:
    with db.write() as conn:
        a = queue.enqueue_file(conn, _jobs(1), OUT)
        b = queue.enqueue_file(
            conn,
            [
                queue.NewJob(
                    task="mesh",
                    model="m",
                    source_uri="file:///inbox/a.json",
                    source_sha256="cd" * 32,
                )
            ],
            OUT,
        )
    assert a[0].id != b[0].id and b[0].created


def test_rejected_rows_get_an_event_and_an_error_folder(db: Database) -> None:
    with db.write() as conn:
        (e,) = queue.enqueue_file(conn, _jobs(1, state="rejected", error="bad task"), OUT)
    with db.read() as conn:
        job = queue.get_job(conn, e.id)
        evs = queue.events(conn, e.id)
    assert job is not None and job["state"] == "rejected" and job["error"] == "bad task"
    assert job["outputs_uri"] == f"/out/rejected/{e.id}"
    assert [(ev["from_state"], ev["to_state"], ev["detail"]) for ev in evs] == [
        (None, "rejected", "bad task")
    ]


def test_claim_takes_most_urgent_first_and_only_its_model(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(2, priority=0), OUT)
        queue.enqueue_file(conn, _jobs(1, priority=9, uri="file:///inbox/urgent.json"), OUT)
        queue.enqueue_file(conn, _jobs(2, model="other", uri="file:///inbox/o.json"), OUT)
    with db.write() as conn:
        got = queue.claim(conn, model="m", limit=2, owner="r1", lease_s=60, outputs_root=OUT)
    assert [j["priority"] for j in got] == [9, 0]
    assert all(j["model"] == "m" and j["attempts"] == 1 for j in got)
    assert all(j["outputs_uri"] == f"/out/{j['id']}" for j in got)
    with db.read() as conn:
        rows = conn.execute(
            text("SELECT state, lease_owner, lease_expires_at > started_at FROM jobs"
                 " WHERE id IN (:a, :b)"), {"a": got[0]["id"], "b": got[1]["id"]},
        ).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [("running", "r1", True)] * 2


def test_claimed_jobs_are_not_claimed_twice(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(5), OUT)
    with db.write() as conn:
        a = queue.claim(conn, model="m", limit=3, owner="r1", lease_s=60, outputs_root=OUT)
    with db.write() as conn:
        b = queue.claim(conn, model="m", limit=3, owner="r2", lease_s=60, outputs_root=OUT)
    assert len(a) == 3 and len(b) == 2
    assert not {j["id"] for j in a} & {j["id"] for j in b}


def test_finish_only_touches_jobs_this_runner_holds(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(2), OUT)
        got = queue.claim(conn, model="m", limit=2, owner="r1", lease_s=60, outputs_root=OUT)
    ids = [j["id"] for j in got]
    with db.write() as conn:
        assert queue.finish(conn, ids, owner="intruder") == []
        assert sorted(queue.finish(conn, ids, owner="r1")) == sorted(ids)
        assert queue.finish(conn, ids, owner="r1") == []  # succeeded once and only once
    with db.read() as conn:
        history = [(e["from_state"], e["to_state"]) for e in queue.events(conn, ids[0])]
    assert history == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]


def test_transient_failure_requeues_with_delay_until_attempts_spent(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(1, max_attempts=2), OUT)
    states = []
    for _ in range(2):
        with db.write() as conn:
            conn.execute(text("UPDATE jobs SET run_after = created_at"))  # skip the back-off
            (job,) = queue.claim(conn, model="m", limit=1, owner="r", lease_s=60, outputs_root=OUT)
            states.append(
                queue.fail(
                    conn, job["id"], owner="r", error="disk hiccup", permanent=False, retry_in_s=30
                )
            )
    assert states == ["queued", "failed"]


def test_delayed_job_is_not_runnable_until_its_time(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(1), OUT)
        (job,) = queue.claim(conn, model="m", limit=1, owner="r", lease_s=60, outputs_root=OUT)
        queue.fail(conn, job["id"], owner="r", error="hiccup", permanent=False, retry_in_s=3600)
    with db.read() as conn:
        assert queue.demand(conn) == []
        ahead = queue.outlook(conn)
        assert ahead.next_run_after is not None and ahead.next_run_after > queue.now(conn)
        assert not ahead.any_running


def test_permanent_failure_fails_at_once(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(1, max_attempts=5), OUT)
        (job,) = queue.claim(conn, model="m", limit=1, owner="r", lease_s=60, outputs_root=OUT)
        state = queue.fail(
            conn, job["id"], owner="r", error="no foreground", permanent=True, retry_in_s=1
        )
    assert state == "failed"
    with db.read() as conn:
        row = queue.get_job(conn, job["id"])
    assert row is not None and row["error"] == "no foreground" and row["finished_at"] is not None


def test_demand_summarises_runnable_work_per_model(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(3, priority=1), OUT)
        queue.enqueue_file(conn, _jobs(1, model="x", priority=7, uri="file:///b.json"), OUT)
    with db.read() as conn:
        d = {m.model: m for m in queue.demand(conn)}
    assert (d["m"].ready, d["m"].top_priority) == (3, 1)
    assert (d["x"].ready, d["x"].top_priority) == (1, 7)


def test_demand_reads_a_bounded_head_of_each_models_queue(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(5, priority=0), OUT)
        queue.enqueue_file(conn, _jobs(1, priority=3, uri="file:///b.json"), OUT)
        queue.enqueue_file(conn, _jobs(2, model="zz", uri="file:///z.json"), OUT)
        queue.enqueue_file(conn, _jobs(1, model="aa", uri="file:///a.json"), OUT)
        (late,) = queue.claim(conn, model="aa", limit=1, owner="r", lease_s=60, outputs_root=OUT)
        queue.fail(conn, late["id"], owner="r", error="x", permanent=False, retry_in_s=3600)
    with db.read() as conn:
        d = {m.model: m for m in queue.demand(conn, cap=3)}
    assert set(d) == {"m", "zz"}  # "aa" has only a job waiting out its back-off
    assert (d["m"].ready, d["m"].top_priority) == (3, 3)  # counted up to the cap
    assert (d["zz"].ready, d["zz"].top_priority) == (2, 0)


def test_reporting_views_have_the_documented_columns(db: Database) -> None:
    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(1), OUT)
        (job,) = queue.claim(conn, model="m", limit=1, owner="r", lease_s=60, outputs_root=OUT)
        queue.finish(conn, [job["id"]], owner="r")
    with db.read() as conn:
        summary = conn.execute(text("SELECT * FROM job_summary")).mappings().one()
        history = conn.execute(text("SELECT * FROM job_history ORDER BY at")).mappings().all()
    assert list(summary.keys()) == [
        "id", "task", "model", "state", "priority", "attempts", "source",
        "created_at", "started_at", "finished_at", "wait_s", "run_s", "error",
    ]  # fmt: skip
    assert summary["state"] == "succeeded" and summary["source"] == "file:///inbox/a.json#0"
    assert summary["wait_s"] >= 0 and summary["run_s"] >= 0
    assert list(history[0].keys()) == [
        "job_id", "task", "model", "from_state", "to_state", "at", "runner", "attempt", "detail",
    ]  # fmt: skip
    assert [h["to_state"] for h in history] == ["queued", "running", "succeeded"]


def test_migrated_schema_matches_the_table_definitions(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from db.models import metadata

    with db.read() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_a_lease_has_an_owner_exactly_while_the_job_runs(db: Database) -> None:
    """The CHECK that lets a runner's updates of its own jobs say only ``lease_owner``."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    with db.write() as conn:
        queue.enqueue_file(conn, _jobs(3), OUT)
        a, b = queue.claim(conn, model="m", limit=2, owner="r", lease_s=60, outputs_root=OUT)
    for sql in (
        "UPDATE jobs SET state = 'succeeded' WHERE id = :id",  # finished, still leased
        "UPDATE jobs SET lease_owner = NULL WHERE id = :id",  # running, nobody's
        "UPDATE jobs SET lease_owner = 'r' WHERE state = 'queued'",  # leased, not running
    ):
        with pytest.raises(IntegrityError, match="lease_while_running"), db.write() as conn:
            conn.execute(text(sql), {"id": a["id"]})
    with db.write() as conn:
        assert queue.finish(conn, [a["id"], b["id"]], owner="someone else") == []
        assert queue.finish(conn, [a["id"], b["id"]], owner="r") == [a["id"], b["id"]]
        assert queue.finish(conn, [a["id"]], owner="r") == []  # once, and only once


def test_the_claim_walks_its_index_in_order_without_a_sort(db: Database) -> None:
    """ix_jobs_claim is (model, priority DESC, id) on both databases: a table rebuild on
    SQLite once dropped the DESC, and each claim then sorted all its model's jobs."""
    _assert_claim_index_descending(db)


def _assert_claim_index_descending(db: Database) -> None:
    definition = {
        "postgresql": "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_claim'",
        "sqlite": "SELECT sql FROM sqlite_master WHERE name = 'ix_jobs_claim'",
    }[db.dialect]
    with db.read() as conn:
        ddl = conn.execute(text(definition))
        assert "(model, priority DESC, id)" in ddl.scalar_one()
        if db.dialect == "sqlite":
            pick = (
                "SELECT id FROM jobs WHERE state = 'queued' AND model = 'm' AND run_after <= :t"
                " ORDER BY priority DESC, id LIMIT 32"
            )
            plan = [r[3] for r in conn.execute(text("EXPLAIN QUERY PLAN " + pick), {"t": "9"})]
            assert any("ix_jobs_claim" in step for step in plan) and not any(
                "TEMP B-TREE" in step for step in plan
            ), plan


def test_migration_0006_puts_right_rows_that_break_the_lease_rule(db: Database) -> None:
    """From 0005 with data: a stray lease owner is dropped, a running job nobody holds goes
    back to the queue, a held job keeps its lease; then the rule and the index hold. On
    SQLite the table rebuild runs with jobs that events refer to (it once failed there)."""
    from db.migrate import downgrade, upgrade

    downgrade(db, "0005")
    with db.write() as conn:
        ids = [e.id for e in queue.enqueue_file(conn, _jobs(3), OUT)]
        held, orphan, stray = ids
        conn.execute(text("UPDATE jobs SET state = 'running', lease_owner = 'r' WHERE id = :i"),
                     {"i": held})  # fmt: skip
        conn.execute(text("UPDATE jobs SET state = 'running' WHERE id = :i"), {"i": orphan})
        conn.execute(text("UPDATE jobs SET lease_owner = 'gone' WHERE id = :i"), {"i": stray})
    upgrade(db)
    assert current_revision(db) == head_revision()
    with db.read() as conn:
        rows = conn.execute(text("SELECT id, state, lease_owner FROM jobs ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [
        (held, "running", "r"), (orphan, "queued", None), (stray, "queued", None),
    ]  # fmt: skip
    _assert_claim_index_descending(db)
    with pytest.raises(IntegrityError, match="lease_while_running"), db.write() as conn:
        conn.execute(text("UPDATE jobs SET lease_owner = NULL WHERE id = :i"), {"i": held})


def test_status_reads_the_views_with_names_and_outputs(db: Database) -> None:
    from db import reports

    with db.write() as conn:
        (e,) = queue.enqueue_file(conn, _jobs(1, name="duck"), OUT)
        (job,) = queue.claim(conn, model="m", limit=1, owner="r", lease_s=60, outputs_root=OUT)
        queue.finish(conn, [job["id"]], owner="r")
    with db.read() as conn:
        (row,) = reports.summaries(conn, e.id)
        history = reports.history(conn, e.id)
    assert (row["name"], row["state"], row["outputs_uri"]) == ("duck", "succeeded", f"/out/{e.id}")
    assert row["run_s"] >= 0 and row["finished_at"].tzinfo is not None
    assert [h["to_state"] for h in history] == ["queued", "running", "succeeded"]
    assert history[0]["at"].tzinfo is not None


def test_outlook_sees_running_and_queued_jobs(db: Database) -> None:
    with db.write() as conn:
        assert queue.outlook(conn) == queue.Outlook(None, False)
        queue.enqueue_file(conn, _jobs(2), OUT)
        queue.claim(conn, model="m", limit=1, owner="r", lease_s=60, outputs_root=OUT)
        ahead = queue.outlook(conn)
        mine = queue.outlook(conn, {"m", "other"})
        others = queue.outlook(conn, {"other"})
        nothing = queue.outlook(conn, set())
    assert ahead.any_running and ahead.next_run_after is not None
    assert mine == ahead  # the jobs of model m are among those asked about
    assert others == nothing == queue.Outlook(None, False)
