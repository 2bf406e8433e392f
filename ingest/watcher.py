"""The drop-folder watcher: file events, a scan at start-up, and a periodic rescan.

Events make ingestion prompt; the scans make it complete. The events come from the
kernel's inotify, read directly (``ingest/inotify.py``: watchdog's handling of renames
is quadratic in a burst), or from watchdog where there is no inotify (other systems,
or ``ingest.watcher: watchdog``). inotify drops events when its queue overflows (a
20,000-file burst overflows the kernel's default queue of 16,384 events); both sources
report that, and the watcher rescans at once, but the rescan, not the event stream,
is the source of truth.

A file is read when it is closed after writing or renamed into the inbox, never on
"created", which fires while the writer is still writing (a hard link, or under
watchdog a file renamed in from outside the inbox, also arrives as "created": it is
read once it is older than the settle time). A scan reads a file only once it has
been seen unchanged (size, modification time, inode) on two looks and was last
modified at least ``ingest.settle_s`` ago, so a slow writer's pause is not taken for
the end of its file; and a file that does not parse while it is young is looked at
again, not rejected (``ingest.unfinished_grace_s``).

Files that arrive together are read one by one and stored together (see
``Ingester.commit``): a burst costs a few statements per few hundred files.
"""

from __future__ import annotations

import logging
import os
import queue as stdqueue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import InterfaceError, OperationalError

from config.text import exception_line
from db.engine import DatabaseReplaced
from ingest import inotify
from ingest.ingester import Ingester, IngestResult, is_job_file
from ingest.inotify import Event
from storage.errors import TransientError

log = logging.getLogger("gen3d.ingest")
BATCH = 500  # paths taken from the events, then stored in one go
# Infrastructure away (the database, the outputs): wait this long, doubling, at most 30 s.
OUTAGE_S = 0.5


class _Source(Protocol):
    def read(self, timeout_s: float) -> list[Event]: ...
    def wake(self) -> None: ...
    def rewatch(self) -> None: ...
    def close(self) -> None: ...


class _InotifySource:
    def __init__(self, root: Path) -> None:
        self._inotify = inotify.Inotify(str(root))

    def read(self, timeout_s: float) -> list[Event]:
        return self._inotify.read(timeout_s)

    def wake(self) -> None:
        self._inotify.wake()

    def rewatch(self) -> None:
        self._inotify.watch_tree(self._inotify.root)

    def close(self) -> None:
        self._inotify.close()


class _WatchdogSource:
    """watchdog's observer, for systems without inotify: its events turned into ours."""

    def __init__(self, root: Path) -> None:
        from watchdog.events import (
            EventsLostEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileMovedEvent,
            FileSystemEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        events: stdqueue.Queue[Event | None] = stdqueue.Queue()
        self._events = events

        def offer(kind: str, raw: str | bytes) -> None:
            path = os.fsdecode(raw)
            rel = os.path.relpath(path, root)
            if rel.startswith("..") or any(p.startswith(".") for p in rel.split(os.sep)):
                return  # outside, or .accepted, .rejected, dotfiles
            events.put(Event(kind, path))

        class Handler(FileSystemEventHandler):
            def on_closed(self, event: FileSystemEvent) -> None:
                if not event.is_directory:
                    offer("ready", event.src_path)

            def on_moved(self, event: FileSystemEvent) -> None:
                if not event.is_directory:
                    offer("ready", event.dest_path)

            def on_created(self, event: FileSystemEvent) -> None:
                if not event.is_directory:
                    offer("created", event.src_path)

            def on_any_event(self, event: FileSystemEvent) -> None:
                if isinstance(event, EventsLostEvent):
                    events.put(Event("rescan"))

        self._observer = Observer()
        # Only the events acted on: inotify then sends no open, read or modify events.
        self._observer.schedule(
            Handler(), str(root), recursive=True,
            event_filter=[FileClosedEvent, FileMovedEvent, FileCreatedEvent, EventsLostEvent],
        )  # fmt: skip
        self._observer.start()

    def read(self, timeout_s: float) -> list[Event]:
        try:
            first = self._events.get(timeout=timeout_s)
        except stdqueue.Empty:
            return []
        taken = [first]
        while len(taken) < BATCH:
            try:
                taken.append(self._events.get_nowait())
            except stdqueue.Empty:
                break
        return [e for e in taken if e is not None]

    def wake(self) -> None:
        self._events.put(None)

    def rewatch(self) -> None:
        pass  # watchdog adds watches for new folders itself

    def close(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)


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
        self.inbox = ingester.inbox
        self.rescan_interval_s = rescan_interval_s
        self.settle_s = ingester.settings.ingest.settle_s
        self.on_result = on_result
        kind = ingester.settings.ingest.watcher
        self.source_kind = "inotify" if kind == "auto" and inotify.available() else kind
        if self.source_kind == "auto":
            self.source_kind = "watchdog"
        self._source: _Source | None = None
        self._deferred: set[Path] = set()  # waiting for an input, or for the rest of itself
        self._fresh: set[Path] = set()  # created (or renamed in from outside), not read yet
        self._looks: dict[Path, tuple[int, int, int]] = {}  # what the last scan saw
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gen3d-ingest", daemon=True)
        self._outage = 0.0  # seconds to wait before the next try while the database is away
        self.error: str | None = None  # why it stopped by itself (the database was replaced)

    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        source = _InotifySource if self.source_kind == "inotify" else _WatchdogSource
        self._source = source(self.inbox)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._source is not None:
            self._source.wake()
        self._thread.join(timeout=30)
        if self._source is not None:
            self._source.close()

    def _loop(self) -> None:
        assert self._source is not None
        # The first scans come at once, then on a fixed schedule (a busy event stream
        # must not postpone them), sooner while a scan saw files it could not read yet.
        next_scan = time.monotonic()
        while not self._stop.is_set():
            events = self._source.read(max(next_scan - time.monotonic(), 0.0))
            if self._stop.is_set():
                break
            if self._outage:
                self._stop.wait(self._outage)
            kinds = {e.kind for e in events}
            if "rescan" in kinds:
                self._source.rewatch()
            if kinds & {"rescan", "folder"} or time.monotonic() >= next_scan:
                unsettled = self._scan()
                soon = self.settle_s if unsettled or self._fresh else self.rescan_interval_s
                next_scan = time.monotonic() + min(max(soon, 0.05), self.rescan_interval_s)
            ready = [Path(e.path) for e in events if e.kind == "ready"]
            self._fresh |= {Path(e.path) for e in events if e.kind == "created"}
            if ready or self._fresh:
                # Something arrived: it may be the picture a deferred job file waits for.
                retry, self._deferred = self._deferred, set()
                self._ingest([*ready, *retry, *self._settled_fresh()])

    def _settled_fresh(self) -> list[Path]:
        """Created files that nobody writes any more: last modified at least
        ``settle_s`` ago (a file renamed in keeps its old time). The others wait for
        their close event, or for a scan."""
        now, ready = time.time(), []
        for path in list(self._fresh):
            try:
                if now - os.lstat(path).st_mtime < self.settle_s:
                    continue
            except FileNotFoundError:
                pass
            except OSError:
                continue
            self._fresh.discard(path)
            ready.append(path)
        return ready

    def _scan(self) -> bool:
        """One look at the whole inbox: ingest the files that are settled; True when it
        saw files it has to look at again (not settled yet, or waiting for an input)."""
        try:
            results = self.ingester.scan(grace=True, settle_s=self.settle_s, looks=self._looks)
        except DatabaseReplaced as exc:
            self._fail(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - e.g. the database is away: next round
            self._outage = min(max(self._outage * 2, OUTAGE_S), 30.0)
            log.warning("scanning %s failed: %s; trying again in %.1f s", self.inbox,
                        exception_line(exc), max(self._outage, self.settle_s))  # fmt: skip
            return True
        self._outage = 0.0
        self._fresh -= {Path(r.path) for r in results}
        for result in results:
            self._after(result)
        return any(os.path.lexists(p) for p in self._looks)

    def _ingest(self, paths: Iterable[Path]) -> None:
        todo = sorted({p for p in paths if is_job_file(p) and os.path.lexists(p)})
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            try:
                results = self.ingester.ingest_paths(chunk, move=True, grace=True)
            except DatabaseReplaced as exc:
                self._fail(exc)
                return
            except Exception as exc:  # noqa: BLE001 - the thread must live on
                # The infrastructure is away (reading a file is never the reason: that is
                # the file's rejection): these files stay and are tried again, after a
                # pause that grows while it stays away, one line per try.
                self._outage = min(max(self._outage * 2, OUTAGE_S), 30.0)
                infra = isinstance(exc, OperationalError | InterfaceError | TransientError)
                log.warning("ingesting %d file(s) failed: %s; trying again in %.1f s",
                            len(chunk), exception_line(exc), self._outage,
                            exc_info=not infra)  # fmt: skip
                self._deferred.update(chunk)
                continue
            self._outage = 0.0
            for result in results:
                self._after(result)

    def _fail(self, exc: DatabaseReplaced) -> None:
        self.error = str(exc)
        log.error("%s", exc)
        self._stop.set()

    def _after(self, result: IngestResult) -> None:
        if result.status in ("deferred", "retry"):
            self._deferred.add(Path(result.path))
        elif result.status == "enqueued" and self.on_result:
            self.on_result(result)
