"""An outage of the outputs' storage hands jobs back without using their attempts, and
the runner waits for the storage instead of spinning through the queue."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config import load_settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from db.models import job_events
from runner.loop import Runner


def test_jobs_ride_out_an_outputs_outage_without_using_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = tmp_path / "outbox"
    settings = load_settings(
        env={}, database_url=f"sqlite:///{tmp_path / 'gen3d.sqlite3'}",
        inbox=str(tmp_path / "inbox"), outputs=str(outbox),
        runner={"retry_base_s": 0.05, "poll_interval_s": 0.02, "storage_retry_s": 0.2},
    )  # fmt: skip
    db = Database(create(settings.database_url))
    upgrade(db)
    runner = Runner(settings, db)
    new = [
        queue.NewJob(task="mesh", model="builtin-noop", source_uri="file:///t.json",
                     source_sha256="ab" * 32, source_entry=i, inputs={"prompt": "x"})
        for i in range(6)
    ]  # fmt: skip
    with db.write() as conn:
        ids = [e.id for e in queue.enqueue_file(conn, new, runner.outputs_root)]
    # The outage: the outputs folder is replaced by a file, so every write under it
    # fails with ENOTDIR from the kernel, for longer than all three attempts would take.
    outbox.write_bytes(b"not a folder")
    caplog.set_level(logging.WARNING, logger="gen3d.runner")
    worker = threading.Thread(target=runner.run, kwargs={"until_idle": True})
    worker.start()
    time.sleep(3.0)
    with db.read() as conn:
        during = conn.execute(
            select(func.count()).where(job_events.c.to_state == "running")
        ).scalar_one()
        assert queue.count_by_state(conn) == {"queued": len(ids)}
    outbox.unlink()
    outbox.mkdir()
    worker.join(timeout=60)
    assert not worker.is_alive()
    with db.read() as conn:
        jobs = [queue.get_job(conn, i) for i in ids]
        handed_back = queue.events(conn, ids[0])[2]
    assert [(j["state"], j["attempts"]) for j in jobs if j] == [("succeeded", 1)] * len(ids)
    assert all((outbox / str(i) / "manifest.json").is_file() for i in ids)
    assert during <= 2 * len(ids)  # a batch or two, not a claim every poll
    assert handed_back["to_state"] == "queued"
    assert "Not a directory" in handed_back["detail"]
    assert handed_back["detail"].endswith("handed back without using an attempt")
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "cannot be written" in m]) == 1  # once per outage
    assert len([m for m in said if "can be written again" in m]) == 1


def test_a_missing_outputs_folder_is_made_again_not_an_outage(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    settings = load_settings(
        env={}, database_url=f"sqlite:///{tmp_path / 'gen3d.sqlite3'}",
        inbox=str(tmp_path / "inbox"), outputs=str(outbox),
    )  # fmt: skip
    db = Database(create(settings.database_url))
    upgrade(db)
    runner = Runner(settings, db)
    job = queue.NewJob(task="mesh", model="builtin-noop", source_uri="file:///t.json",
                       source_sha256="ab" * 32, inputs={"prompt": "x"})  # fmt: skip
    with db.write() as conn:
        (e,) = queue.enqueue_file(conn, [job], runner.outputs_root)
    shutil.rmtree(outbox, ignore_errors=True)
    runner.run(until_idle=True)
    with db.read() as conn:
        got = queue.get_job(conn, e.id)
    assert got is not None and (got["state"], got["attempts"]) == ("succeeded", 1)
