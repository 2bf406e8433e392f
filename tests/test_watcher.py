"""The drop-folder watcher with real inotify events and rescans."""

from __future__ import annotations

import json
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


@pytest.fixture
def ingester(sqlite_settings: Settings) -> Ingester:
    db = Database(create(sqlite_settings.database_url))
    upgrade(db)
    return Ingester(sqlite_settings, db)


def _watch(
    ing: Ingester, rescan_s: float
) -> tuple[InboxWatcher, list[IngestResult], threading.Event]:
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
