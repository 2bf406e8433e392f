"""The drop-folder watcher: watchdog events, a scan at start-up, and a periodic rescan.

Events make ingestion prompt; the scans make it complete. inotify drops events when
its queue overflows (a 20,000-file burst lost about half of them in a probe, without
telling the handler), so the rescan, not the event stream, is the source of truth.
A file is read only once it is closed after writing or renamed into the inbox, never
on "created", which fires while the writer is still writing.
"""

from __future__ import annotations

import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ingest.ingester import Ingester, IngestResult, is_job_file

log = logging.getLogger("gen3d.ingest")
_RESCAN = Path("\0rescan")  # a sentinel no real event can produce


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: Path, paths: stdqueue.Queue[Path | None]) -> None:
        self.inbox = inbox
        self.paths = paths

    def _offer(self, raw: str | bytes) -> None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return
        if any(part.startswith(".") for part in rel.parts):  # .accepted, .rejected, dotfiles
            return
        self.paths.put(path)

    def on_closed(self, event: FileClosedEvent) -> None:
        if not event.is_directory:
            self._offer(event.src_path)

    def on_moved(self, event: DirMovedEvent | FileMovedEvent) -> None:
        if not event.is_directory:
            self._offer(event.dest_path)

    def on_any_event(self, event: FileSystemEvent) -> None:  # pragma: no cover - logging only
        log.debug("fs event %s %s", event.event_type, event.src_path)


class InboxWatcher:
    """Runs in a thread; ``on_result`` is called after each file is committed."""

    def __init__(
        self,
        ingester: Ingester,
        *,
        rescan_interval_s: float,
        on_result: Callable[[IngestResult], None] | None = None,
    ) -> None:
        self.ingester = ingester
        self.inbox = ingester.settings.inbox_path.absolute()
        self.rescan_interval_s = rescan_interval_s
        self.on_result = on_result
        self._paths: stdqueue.Queue[Path | None] = stdqueue.Queue()
        self._deferred: set[Path] = set()
        self._stop = threading.Event()
        self._observer = Observer()
        self._thread = threading.Thread(target=self._loop, name="gen3d-ingest", daemon=True)

    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._observer.schedule(_Handler(self.inbox, self._paths), str(self.inbox), recursive=True)
        self._observer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._paths.put(None)
        self._observer.stop()
        self._observer.join(timeout=5)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        self._scan()
        # watchdog adds the inotify watch on its own thread after start() returns, so a
        # file dropped in that instant raises no event: rescan soon after start-up, then
        # on a fixed schedule (a busy event stream must not postpone the rescans).
        next_scan = time.monotonic() + min(1.0, self.rescan_interval_s)
        while not self._stop.is_set():
            try:
                path = self._paths.get(timeout=max(next_scan - time.monotonic(), 0.0))
            except stdqueue.Empty:
                path = _RESCAN
            if path is None:  # stop() was called
                break
            if time.monotonic() >= next_scan:
                self._scan()
                next_scan = time.monotonic() + self.rescan_interval_s
            if path is _RESCAN:
                continue
            # Something arrived: it may be the picture a deferred job file waits for.
            retry, self._deferred = self._deferred, set()
            for p in {path, *retry}:
                if is_job_file(p) and p.exists():
                    self._ingest(p)

    def _scan(self) -> None:
        self._deferred.clear()
        try:
            results = self.ingester.scan(
                grace=True, settle_s=self.ingester.settings.ingest.settle_s
            )
        except Exception:  # noqa: BLE001 - e.g. the database is away: try again next round
            log.exception(
                "scanning %s failed; retrying in %.1f s", self.inbox, self.rescan_interval_s
            )
            return
        for result in results:
            self._after(result)

    def _ingest(self, path: Path) -> None:
        try:
            result = self.ingester.ingest_path(path, move=True, grace=True)
        except Exception:  # noqa: BLE001 - the next scan retries it
            log.exception("ingesting %s failed; it stays in the inbox for the next scan", path)
            return
        self._after(result)

    def _after(self, result: IngestResult) -> None:
        if result.status == "deferred":
            self._deferred.add(Path(result.path))
        elif result.status == "enqueued" and self.on_result:
            self.on_result(result)
