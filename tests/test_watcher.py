"""The drop-folder watcher with real file events and rescans, with each event source:
the kernel's inotify read directly, and watchdog (what other systems use)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from config import Settings
from db.engine import Database, create
from db.migrate import upgrade
from ingest.ingester import Ingester, IngestResult
from ingest.watcher import InboxWatcher
from tests.pictures import disk_png

SOURCE = "inotify"


@pytest.fixture(autouse=True, params=["inotify", "watchdog"])
def source(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(f"{__name__}.SOURCE", request.param)
    return str(request.param)


@pytest.fixture
def ingester(sqlite_settings: Settings) -> Ingester:
    db = Database(create(sqlite_settings.database_url))
    upgrade(db)
    return Ingester(sqlite_settings, db)


def _watch(
    ing: Ingester, rescan_s: float
) -> tuple[InboxWatcher, list[IngestResult], threading.Event]:
    ing.settings.ingest.watcher = SOURCE  # type: ignore[assignment]
    results: list[IngestResult] = []
    got = threading.Event()

    def on_result(r: IngestResult) -> None:
        results.append(r)
        got.set()

    return InboxWatcher(ing, rescan_interval_s=rescan_s, on_result=on_result), results, got


def _wait(cond: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_job_file_that_arrives_before_its_picture_waits_for_it(ingester: Ingester) -> None:
    inbox = ingester.settings.inbox_path
    inbox.mkdir(parents=True)
    watcher, results, _ = _watch(ingester, rescan_s=60)  # no rescan: events alone must do it
    watcher.start()
    try:
        (inbox / "job.json").write_text(json.dumps({"task": "mesh", "image": "late.png"}))
        time.sleep(0.3)
        assert results == []  # deferred, not rejected
        (inbox / "late.png").write_bytes(disk_png())
        assert _wait(lambda: len(results) == 1)
        assert [e.state for e in results[0].jobs] == ["queued"]
    finally:
        watcher.stop()


def test_watcher_survives_a_failing_scan(
    ingester: Ingester, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = ingester.settings.inbox_path
    inbox.mkdir(parents=True)
    (inbox / "a.png").write_bytes(disk_png())
    (inbox / "a.json").write_text(json.dumps({"task": "mesh", "image": "a.png"}))
    real_scan, calls = ingester.scan, []

    def flaky_scan(**kw: object) -> list[IngestResult]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database went away")
        return real_scan(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ingester, "scan", flaky_scan)
    watcher, results, _ = _watch(ingester, rescan_s=0.1)
    watcher.start()
    try:
        assert _wait(lambda: len(results) == 1)
        assert len(calls) >= 2 and not Path(inbox / "a.json").exists()
    finally:
        watcher.stop()


def _ingester_with(tmp_path: Path, **ingest: float) -> Ingester:
    """An ingester on a fresh SQLite file with these ingest settings, its inbox made."""
    from config import load_settings

    settings = load_settings(
        env={},
        database_url=f"sqlite:///{tmp_path / 'slow.sqlite3'}",
        inbox=str(tmp_path / "inbox"),
        outputs=str(tmp_path / "outbox"),
        ingest=ingest,
    )
    db = Database(create(settings.database_url))
    upgrade(db)
    settings.inbox_path.mkdir(parents=True)
    return Ingester(settings, db)


def _states(ing: Ingester) -> list[str]:
    from db import queue

    with ing.db.read() as conn:
        return [j["state"] for j in queue.list_jobs(conn)]


def test_a_writer_that_pauses_mid_file_loses_nothing(tmp_path: Path) -> None:
    """A network copy or an editor may stop half-way for longer than the settle time:
    the rescans must not take the half for the whole and reject it."""
    ing = _ingester_with(tmp_path, settle_s=0.3, rescan_interval_s=0.2)
    inbox = ing.settings.inbox_path
    (inbox / "a.png").write_bytes(disk_png())
    text = json.dumps({"task": "mesh", "image": "a.png", "name": "slow"})
    watcher, results, _ = _watch(ing, rescan_s=0.2)
    watcher.start()
    try:
        with (inbox / "slow.json").open("w") as fh:
            fh.write(text[:20])
            fh.flush()
            time.sleep(2.0)  # several rescans and settle times pass
            fh.write(text[20:])
        assert _wait(lambda: _states(ing) == ["queued"])
        assert not (inbox / ".rejected").exists()
    finally:
        watcher.stop()


def test_a_job_file_that_never_parses_is_rejected_once_it_is_old(tmp_path: Path) -> None:
    ing = _ingester_with(tmp_path, settle_s=0.1, unfinished_grace_s=1.0)
    inbox = ing.settings.inbox_path
    watcher, _, _ = _watch(ing, rescan_s=0.2)
    watcher.start()
    try:
        (inbox / "broken.json").write_text("{not json")
        time.sleep(0.5)
        assert _states(ing) == [] and (inbox / "broken.json").exists()  # still young
        assert _wait(lambda: _states(ing) == ["rejected"])
        assert _wait((inbox / ".rejected" / "broken.json").exists)
    finally:
        watcher.stop()


def test_a_file_renamed_in_from_outside_the_inbox_is_read_without_a_rescan(
    ingester: Ingester, tmp_path: Path
) -> None:
    inbox = ingester.settings.inbox_path
    inbox.mkdir(parents=True)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "a.png").write_bytes(disk_png())
    (staging / "a.json").write_text(json.dumps({"task": "mesh", "image": "a.png"}))
    old = time.time() - 60  # written a while ago, as a finished file would have been
    for name in ("a.png", "a.json"):
        os.utime(staging / name, (old, old))
    watcher, results, _ = _watch(ingester, rescan_s=60)  # no rescan: events alone must do it
    watcher.start()
    try:
        time.sleep(1.5)  # the scans of start-up are over
        os.rename(staging / "a.png", inbox / "a.png")
        os.rename(staging / "a.json", inbox / "a.json")
        assert _wait(lambda: len(results) == 1, timeout=10)
        assert [e.state for e in results[0].jobs] == ["queued"]
    finally:
        watcher.stop()


def test_a_folder_made_after_start_up_is_watched_too(ingester: Ingester) -> None:
    inbox = ingester.settings.inbox_path
    inbox.mkdir(parents=True)
    watcher, results, _ = _watch(ingester, rescan_s=60)  # no rescan: events alone must do it
    watcher.start()
    try:
        time.sleep(1.5)  # the scans of start-up are over
        (inbox / "batch" / "deeper").mkdir(parents=True)
        time.sleep(0.3)
        (inbox / "batch" / "deeper" / "a.png").write_bytes(disk_png())
        (inbox / "batch" / "deeper" / "a.json").write_text(
            json.dumps({"task": "mesh", "image": "a.png"})
        )
        assert _wait(lambda: len(results) == 1, timeout=10)
        assert [e.state for e in results[0].jobs] == ["queued"]
    finally:
        watcher.stop()
