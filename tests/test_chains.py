"""Chained stages ('then') in the queue, on SQLite and PostgreSQL: a chain is job rows
linked by parent_id; a stage is queued when its parent succeeds, ends when it fails."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from db import queue
from db.engine import Database
from db.models import jobs

OUT = "/out/"
TASKS = ("mesh", "texture", "rig")


def _chain(entry: int = 0, *, tasks: tuple[str, ...] = TASKS) -> list[queue.NewJob]:
    return [
        queue.NewJob(
            task=task,
            model=f"m-{task}",
            source_uri="file:///inbox/chain.json",
            source_sha256="ab" * 32,
            source_entry=entry,
            state="queued" if n == 0 else "waiting",
            inputs={"images": ["file:///inbox/cat.png"]} if task != "rig" else {},
            stage=n,
            stages=len(tasks),
            max_attempts=1,
        )
        for n, task in enumerate(tasks)
    ]


def _rows(db: Database, ids: list[int]) -> list[dict[str, Any]]:
    with db.read() as conn:
        found = [queue.get_job(conn, i) for i in ids]
    assert all(found)
    return found  # type: ignore[return-value]


def _claim(db: Database, model: str, owner: str = "r1") -> list[dict[str, Any]]:
    with db.write() as conn:
        return queue.claim(conn, model=model, limit=8, owner=owner, lease_s=60, outputs_root=OUT)


def _succeed(db: Database, job: dict[str, Any], owner: str = "r1") -> None:
    with db.write() as conn:
        assert queue.finish(conn, [job["id"]], owner=owner) == [job["id"]]
        queue.promote(conn, {job["id"]: f"{OUT}{job['id']}/mesh.glb"})


def test_a_chain_is_one_queued_row_and_waiting_rows_linked_to_their_parents(db: Database) -> None:
    with db.write() as conn:
        made = queue.enqueue_file(conn, _chain(), OUT)
    with db.write() as conn:
        again = queue.enqueue_file(conn, _chain(), OUT)
    assert [e.created for e in made] == [True] * 3 and [e.created for e in again] == [False] * 3
    assert [e.id for e in again] == [e.id for e in made]
    rows = _rows(db, [e.id for e in made])
    assert [r["state"] for r in rows] == ["queued", "waiting", "waiting"]
    assert [r["parent_id"] for r in rows] == [None, rows[0]["id"], rows[1]["id"]]
    assert [(r["stage"], r["stages"]) for r in rows] == [(0, 3), (1, 3), (2, 3)]
    with db.read() as conn:
        assert [j["id"] for j in queue.chain(conn, rows[2]["id"])] == [r["id"] for r in rows]
        assert [e["to_state"] for e in queue.events(conn, rows[1]["id"])] == ["waiting"]


def test_each_stage_runs_after_its_parent_with_the_parents_mesh(db: Database) -> None:
    with db.write() as conn:
        ids = [e.id for e in queue.enqueue_file(conn, _chain(), OUT)]
    assert _claim(db, "m-texture") == []  # waiting stages are not runnable
    (first,) = _claim(db, "m-mesh")
    _succeed(db, first)
    texture = _rows(db, ids)[1]
    assert texture["state"] == "queued"
    assert texture["inputs"] == {"images": ["file:///inbox/cat.png"],
                                 "mesh": f"{OUT}{ids[0]}/mesh.glb"}  # fmt: skip
    assert _rows(db, ids)[2]["state"] == "waiting"
    (claimed,) = _claim(db, "m-texture")
    assert claimed["id"] == ids[1] and claimed["stage"] == 1 and claimed["stages"] == 3
    _succeed(db, claimed)
    (rig,) = _claim(db, "m-rig")
    assert rig["inputs"] == {"mesh": f"{OUT}{ids[1]}/mesh.glb"}
    _succeed(db, rig)
    assert [r["state"] for r in _rows(db, ids)] == ["succeeded"] * 3
    with db.read() as conn:
        history = [e["to_state"] for e in queue.events(conn, ids[2])]
    assert history == ["waiting", "queued", "running", "succeeded"]


def test_a_stage_that_fails_for_good_fails_the_stages_after_it(db: Database) -> None:
    with db.write() as conn:
        ids = [e.id for e in queue.enqueue_file(conn, _chain(), OUT)]
    (first,) = _claim(db, "m-mesh")
    _succeed(db, first)
    (texture,) = _claim(db, "m-texture")
    with db.write() as conn:
        state = queue.fail(conn, texture["id"], owner="r1", error="picture is fully transparent",
                           permanent=True, retry_in_s=0)  # fmt: skip
    assert state == "failed"
    rows = _rows(db, ids)
    assert [r["state"] for r in rows] == ["succeeded", "failed", "failed"]
    assert rows[2]["error"] == "stage 2 (texture) failed: picture is fully transparent"
    assert rows[2]["finished_at"] is not None


def test_a_retried_failure_keeps_its_chain_waiting(db: Database) -> None:
    """Only a failure for good ends the later stages; a retry leaves them waiting."""
    with db.write() as conn:
        ids = [e.id for e in queue.enqueue_file(conn, _chain(), OUT)]
        conn.execute(update(jobs).where(jobs.c.id == ids[0]).values(max_attempts=2))
    (first,) = _claim(db, "m-mesh")
    with db.write() as conn:
        assert queue.fail(conn, first["id"], owner="r1", error="flaky", permanent=False,
                          retry_in_s=0) == "queued"  # fmt: skip
    assert [r["state"] for r in _rows(db, ids)] == ["queued", "waiting", "waiting"]


def test_cancelling_a_stage_cancels_the_rest_and_retry_brings_them_back(db: Database) -> None:
    with db.write() as conn:
        ids = [e.id for e in queue.enqueue_file(conn, _chain(), OUT)]
    with db.write() as conn:
        assert queue.cancel(conn, [ids[0]]) == {ids[0]: (True, "cancelled")}
    rows = _rows(db, ids)
    assert [r["state"] for r in rows] == ["cancelled"] * 3
    assert rows[1]["error"] == rows[2]["error"] == "stage 1 (mesh) was cancelled"
    with db.write() as conn:
        refused = queue.retry(conn, [ids[2]])
    assert refused[ids[2]][0] is False and f"waits for job {ids[1]}" in refused[ids[2]][1]
    with db.write() as conn:
        assert queue.retry(conn, [ids[0]]) == {ids[0]: (True, "queued")}
    rows = _rows(db, ids)
    assert [r["state"] for r in rows] == ["queued", "waiting", "waiting"]
    assert rows[2]["error"] is None
    (first,) = _claim(db, "m-mesh")
    _succeed(db, first)
    assert _rows(db, ids)[1]["state"] == "queued"


def test_a_stage_whose_runners_keep_dying_fails_its_chain(db: Database) -> None:
    with db.write() as conn:
        ids = [e.id for e in queue.enqueue_file(conn, _chain(), OUT)]
    (first,) = _claim(db, "m-mesh")
    with db.write() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == first["id"])
            .values(lease_expires_at=queue.after_expr(conn, -5))
        )
        assert queue.reap(conn, max_runner_deaths=1) == {first["id"]: "failed"}
    rows = _rows(db, ids)
    assert [r["state"] for r in rows] == ["failed"] * 3
    assert rows[1]["error"].startswith("stage 1 (mesh) failed: its runner died 1 times")


def test_chains_of_one_file_stay_apart(db: Database) -> None:
    """Two entries of one file make two chains; each stage's parent is its own entry's."""
    with db.write() as conn:
        made = queue.enqueue_file(conn, _chain(0) + _chain(1, tasks=("mesh", "rig")), OUT)
    rows = _rows(db, [e.id for e in made])
    by_entry = {(r["source_entry"], r["stage"]): r for r in rows}
    assert by_entry[(0, 1)]["parent_id"] == by_entry[(0, 0)]["id"]
    assert by_entry[(1, 1)]["parent_id"] == by_entry[(1, 0)]["id"]
    assert by_entry[(1, 1)]["stages"] == 2
