"""A job's outputs folder is its own: never written through a symbolic link, never over
another job's results, a published manifest never replaced, no leftovers of killed
writers; and manifests are small strict JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from config import Settings, load_settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from ingest.ingester import Ingester
from runner import outputs
from runner.loop import Runner
from storage import objects
from tests.pictures import disk_png, write_job

PNG = disk_png()


def _settings(tmp_path: Path, database: str = "gen3d.sqlite3") -> Settings:
    return load_settings(
        env={},
        database_url=f"sqlite:///{tmp_path / database}",
        inbox=str(tmp_path / "inbox"),
        outputs=str(tmp_path / "outbox"),
    )


def _setup(settings: Settings) -> tuple[Database, Ingester, Runner]:
    db = Database(create(settings.database_url))
    upgrade(db)
    return db, Ingester(settings, db), Runner(settings, db)


def _submit(ing: Ingester, doc: object, name: str = "job.json", **pictures: bytes) -> list[int]:
    path = write_job(ing.settings.inbox_path, name, doc, **pictures)
    return [e.id for e in ing.ingest_path(path, move=False, grace=False).jobs]


def _job(db: Database, job_id: int) -> dict[str, Any]:
    with db.read() as conn:
        job = queue.get_job(conn, job_id)
    assert job is not None
    return job


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------- publishing


def test_a_published_local_manifest_is_never_replaced(tmp_path: Path) -> None:
    folder = str(tmp_path / "7")
    outputs.write_manifest(folder, {"state": "failed", "error": "x"})
    outputs.write_manifest(folder, {"state": "succeeded", "attempt": 2})  # replaces an error
    with pytest.raises(outputs.AlreadyPublished):
        outputs.write_manifest(folder, {"state": "succeeded", "attempt": 3})
    assert json.loads((tmp_path / "7" / "manifest.json").read_bytes())["attempt"] == 2
    assert os.listdir(folder) == ["manifest.json"]


def test_create_if_absent_refuses_any_existing_name_and_leaves_it_alone(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.symlink_to(tmp_path / "nowhere")  # even a dangling link counts as there
    with pytest.raises(objects.Conflict):
        objects.write(str(target), b"{}", if_absent=True)
    assert target.is_symlink() and not (tmp_path / "nowhere").exists()
    assert os.listdir(tmp_path) == ["manifest.json"]
