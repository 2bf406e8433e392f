"""Helpers for tests that run jobs end to end: a migrated database with an ingester and a
runner, settings whose only mesh model is a test adapter, submitting, reading a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import Settings, load_settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from ingest.ingester import Ingester
from runner.loop import Runner
from tests.pictures import write_job


def setup(settings: Settings) -> tuple[Database, Ingester, Runner]:
    db = Database(create(settings.database_url))
    upgrade(db)
    return db, Ingester(settings, db), Runner(settings, db)


def only_model(tmp_path: Path, adapter: str, *, model: dict[str, Any] | None = None,
               **overrides: object) -> Settings:  # fmt: skip
    """Settings whose only mesh model ``m`` is ``tests.failing_adapters:<adapter>``;
    ``model``: more of its registry entry (max_batch, ...)."""
    entry = {"adapter": f"tests.failing_adapters:{adapter}", "tasks": ["mesh"], **(model or {})}
    return load_settings(
        env={},
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        inbox=str(tmp_path / "inbox"),
        outputs=str(tmp_path / "out"),
        models={"m": entry},
        default_models={"mesh": "m"},
        **overrides,
    )


def submit(ing: Ingester, doc: object, *, name: str = "job.json", **pictures: bytes) -> list[int]:
    """Write a job file (and pictures: file name with '__' for '.', to bytes) into the
    inbox and ingest it; the job ids."""
    path = write_job(ing.settings.inbox_path, name, doc, **pictures)
    return [e.id for e in ing.ingest_path(path, move=False, grace=False).jobs]


def job(db: Database, job_id: int) -> dict[str, Any]:
    with db.read() as conn:
        found = queue.get_job(conn, job_id)
    assert found is not None
    return found
