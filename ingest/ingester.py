"""Job files to job rows: read each file (or bucket object), have its entries checked
(``ingest/entries.py``), store the rows, write error manifests, file the file away.

Order matters for "nothing is lost, nothing is doubled": rows commit first (keyed by
source URI + content hash + entry, so a repeat is a no-op), then error manifests are
written (idempotently), and only then is the file moved out of the inbox. A crash at
any point leaves the file in the inbox for the next scan, which finds the rows
already there.

Every file settles. Whatever goes wrong while one file is read or checked is that
file's (or that entry's) rejection, with the reason: never an exception that leaves it
in the inbox to be tried again for ever, and never a reason for its neighbours to wait.
Only the infrastructure is retried: the database (``OperationalError``) and storage
that answers "try later" (``TransientError``). Files are read one by one and stored
many to a transaction, so a burst costs a few statements per hundred files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from config import Settings
from config.text import exception_line, printable, source_name
from db import queue
from db.engine import Database, DatabaseReplaced
from ingest.entries import EntryChecker
from ingest.jobfile import Entry
from runner import publish
from storage import objects
from storage.errors import InputError, TransientError, UnsafeFolder
from storage.local import identity, inside, read_limited
from storage.objects import StorageError

log = logging.getLogger("gen3d.ingest")

JOB_SUFFIXES = (".json", ".jsonl")
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
ROWS_PER_TRANSACTION = 2_000  # a burst's files are stored this many rows at a time


def is_job_file(path: Path) -> bool:
    """Job files only: no dotfiles (ours or editors'), no temp names, no pictures."""
    name = path.name
    if name.startswith((".", "~", "#")) or name.endswith(TEMP_SUFFIXES):
        return False
    return name.lower().endswith(JOB_SUFFIXES)


@dataclass
class IngestResult:
    path: Path | str  # a local path, or the s3:// URI of a bucket object
    # "enqueued"; "deferred" (an input has not arrived yet, or the file is still being
    # written); "ignored" (gone before it was read); "retry" (the infrastructure failed:
    # the file stays where it is and is tried again later)
    status: str
    jobs: list[queue.Enqueued] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # job id -> reason, rejected ones
    moved_to: Path | None = None

    @property
    def rejected(self) -> bool:
        return bool(self.errors)


@dataclass
class Read:
    """One job file read and checked: the rows it makes (rejected ones included)."""

    path: Path | str  # a local path, or the object's s3:// URI
    uri: str
    sha: str
    rows: list[queue.NewJob]


class Ingester:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.registry = settings.registry
        self.outputs_root = settings.outputs_root
        self.inbox = settings.inbox_path.absolute()
        self.checker = EntryChecker(settings)
        self.inbox_prefix = self.checker.inbox_prefix  # a bucket inbox's prefix, or None
        self._made_dirs: set[Path] = set()

    # ------------------------------------------------------------------ local files

    def ingest_path(self, path: Path, *, move: bool, grace: bool) -> IngestResult:
        """Turn one job file into rows.

        ``move``: the file is in the inbox: it must really be there (a link to a file
        elsewhere is refused unread), and it is filed under ``.accepted/`` or
        ``.rejected/`` afterwards. ``grace``: a missing picture may still be on its way,
        and a file that does not parse may still be being written; while the file is
        young, leave it for a later look instead of rejecting it.
        """
        return self.ingest_paths([path], move=move, grace=grace)[0]

    def ingest_paths(self, paths: Iterable[Path], *, move: bool, grace: bool) -> list[IngestResult]:
        """``ingest_path`` for many files: each read on its own, all stored together."""
        return self.commit([self.read_path(p, move=move, grace=grace) for p in paths], move=move)

    def read_path(self, path: Path, *, move: bool, grace: bool) -> Read | IngestResult:
        """Read and check one job file: the rows to make, or a result when there is
        nothing to store yet: gone, not whole yet, or "retry" when storage it refers to
        answered "later" (that file waits; the files beside it go on)."""
        path = path.absolute()
        try:
            return self._read_path(path, move=move, grace=grace)
        except TransientError as exc:
            log.warning("%s: %s; it stays for the next look", source_name(path.as_uri()),
                        exception_line(exc, ""))  # fmt: skip
            return IngestResult(path, "retry")
        except Exception as exc:  # noqa: BLE001 - nothing about one file may stall the rest
            return self._unforeseen(path, path.as_uri(), exc)

    def _unforeseen(self, path: Path | str, uri: str, exc: Exception) -> Read:
        """A file that broke a check nobody foresaw: rejected with the reason, once (its
        identity is stable, so a second look finds the row)."""
        log.error("%s: could not be checked: %s", source_name(uri), exception_line(exc, ""))
        log.debug("why", exc_info=True)
        try:
            sha = identity(path) if isinstance(path, Path) else "unreadable"
        except OSError:
            sha = hashlib.sha256(f"unreadable:{uri}".encode()).hexdigest()
        reason = exception_line(exc, "the job file could not be checked")
        return Read(path, uri, sha, [self.checker.rejected(Entry(-1, None), uri, sha, reason)])

    def _read_path(self, path: Path, *, move: bool, grace: bool) -> Read | IngestResult:
        uri = path.as_uri()
        try:
            real = inside(self.inbox, path, what="job file") if move else path.resolve(True)
            data = read_limited(real, self.settings.ingest.max_job_file_bytes, what="job file")
        except FileNotFoundError:
            if not os.path.lexists(path):
                return IngestResult(path, "ignored")  # moved away meanwhile (another ingester)
            why = f"job file is a link to a missing file: {printable(str(path))}"
            sha = identity(path)
            return Read(path, uri, sha, [self.checker.rejected(Entry(-1, None), uri, sha, why)])
        except (InputError, OSError, RuntimeError) as exc:
            try:
                sha = identity(path)
            except FileNotFoundError:
                return IngestResult(path, "ignored")
            reason = (
                str(exc) if isinstance(exc, InputError) else exception_line(exc, "cannot be read")
            )
            return Read(path, uri, sha, [self.checker.rejected(Entry(-1, None), uri, sha, reason)])
        sha = hashlib.sha256(data).hexdigest()
        # Inputs are named relative to the file itself (a link's target, inside the inbox).
        rows = self.checker.rows(data, real.parent, uri, sha, grace=grace, growing=True,
                          age_s=lambda: time.time() - os.lstat(path).st_mtime)  # fmt: skip
        return IngestResult(path, "deferred") if rows is None else Read(path, uri, sha, rows)

    # ------------------------------------------------------------------ bucket objects

    def ingest_object(self, info: objects.ObjectInfo, *, grace: bool = True) -> IngestResult:
        """Turn one job object of a bucket inbox into rows; the object stays where it is.

        Its identity is (URI, ETag): a redelivered or duplicated event, or a listing
        that sees it again, finds the rows already there.
        """
        read = self.read_object(info, grace=grace)
        return read if isinstance(read, IngestResult) else self.commit([read], move=False)[0]

    def read_object(self, info: objects.ObjectInfo, *, grace: bool = True) -> Read | IngestResult:
        """Read and check one job object: the rows to make, or a result when there is
        nothing to store (gone, or waiting for an input). Raises ``TransientError`` and
        ``StorageError`` (S3 said "later", or "access denied"): the infrastructure's
        fault, retried; anything else about the object is its rejection."""
        try:
            return self._read_object(info, grace=grace)
        except (TransientError, StorageError):
            raise
        except Exception as exc:  # noqa: BLE001 - nothing about one object may stall the rest
            return self._unforeseen(info.uri, info.uri, exc)

    def _read_object(self, info: objects.ObjectInfo, *, grace: bool) -> Read | IngestResult:
        uri = info.uri
        try:
            data, got = objects.read_info(uri, self.settings.ingest.max_job_file_bytes,
                                          what="job file")  # fmt: skip
        except InputError as exc:
            current = objects.head(uri)
            if current is None:  # deleted before we got to it
                return IngestResult(uri, "ignored")
            row = self.checker.rejected(Entry(-1, None), uri, current.etag, str(exc))
            return Read(uri, uri, current.etag, [row])
        etag = got.etag or info.etag  # the version read is the one ingested
        # An object is whole once it exists (S3 has no half-written objects): one that
        # does not parse is rejected at once.
        rows = self.checker.rows(
            data, uri.rsplit("/", 1)[0] + "/", uri, etag, grace=grace, growing=False,
            age_s=lambda: _age_s(got.modified or info.modified),
        )  # fmt: skip
        return IngestResult(uri, "deferred") if rows is None else Read(uri, uri, etag, rows)

    # ------------------------------------------------------------------ checking

    # ------------------------------------------------------------------ storing

    def commit(self, got: Sequence[Read | IngestResult], *, move: bool) -> list[IngestResult]:
        """Store the rows of every file read (few transactions for many files), then
        file each away and write its error manifests. A file whose manifests cannot be
        written (the outputs are away) stays where it is, as "retry"."""
        ready = [g for g in got if isinstance(g, Read)]
        stored = iter(self._store(ready))
        results = []
        for g in got:
            if isinstance(g, IngestResult):
                results.append(g)
                continue
            enqueued = next(stored)
            try:
                results.append(self._after_commit(g, enqueued, move=move))
            except (OSError, TransientError, StorageError) as exc:
                log.warning("%s: stored, but %s; it stays for the next look", source_name(g.uri),
                            exception_line(exc, "filing it away failed"))  # fmt: skip
                results.append(IngestResult(g.path, "retry", jobs=enqueued))
        return results

    def _store(self, ready: list[Read]) -> list[list[queue.Enqueued]]:
        """Rows of many files, ``ROWS_PER_TRANSACTION`` at a time. A batch the database
        refuses for what is in it (not for being away) is stored file by file, so one
        file's unstorable content is that file's rejection, not its neighbours' stall."""
        out: list[list[queue.Enqueued]] = [[] for _ in ready]
        why = self.db.replaced() if ready else None
        if why is not None:
            raise DatabaseReplaced(f"{why}; ingest stopped, so that no job goes to a database"
                                   " no runner reads")  # fmt: skip
        for batch in _packs([len(r.rows) for r in ready], ROWS_PER_TRANSACTION):
            if len(batch) == 1 and len(ready[batch[0]].rows) > ROWS_PER_TRANSACTION:
                out[batch[0]] = self._store_alone(ready[batch[0]])
                continue
            try:
                with self.db.write() as conn:
                    got = queue.enqueue_files(conn, [ready[i].rows for i in batch],
                                              self.outputs_root)  # fmt: skip
            except (OperationalError, InterfaceError):
                raise
            except DBAPIError:
                got = [self._store_alone(ready[i]) for i in batch]
            for i, enqueued in zip(batch, got, strict=True):
                out[i] = enqueued
        return out

    def _store_alone(self, read: Read) -> list[queue.Enqueued]:
        """One file's rows, in parts of ``ROWS_PER_TRANSACTION``. If the database refuses
        a part for its content, the file is rejected with the database's reason in one
        more row (parts stored before stay: they were fine), and ``read.rows`` becomes
        what is stored."""
        source = {(read.uri, read.sha)}
        with self.db.read() as conn:
            before = queue.known(conn, source)
        for part in _entry_groups(read.rows, ROWS_PER_TRANSACTION):
            try:
                with self.db.write() as conn:
                    queue.enqueue_files(conn, [part], self.outputs_root)
            except (OperationalError, InterfaceError):
                raise
            except DBAPIError as exc:
                reason = exception_line(exc.orig or exc, "the job file could not be stored")
                log.error("%s: %s", source_name(read.uri), reason)
                fallback = self.checker.rejected(Entry(-1, None), read.uri, read.sha, reason)
                with self.db.write() as conn:  # anything wrong now is the database's
                    queue.enqueue_files(conn, [[fallback]], self.outputs_root)
                    found = queue.known(conn, source)
                stored = [j for j in read.rows if _key(j) in found and _key(j) != _key(fallback)]
                read.rows = [*stored, fallback]
                break
        with self.db.read() as conn:
            found = queue.known(conn, source)
        return [
            queue.Enqueued(id=found[_key(j)][0], source_entry=j.source_entry,
                           state=found[_key(j)][1], created=_key(j) not in before, stage=j.stage)
            for j in read.rows
        ]  # fmt: skip

    def _after_commit(
        self, read: Read, enqueued: list[queue.Enqueued], *, move: bool
    ) -> IngestResult:
        """Write error manifests, file the job file away (local), log."""
        path = read.path
        result = IngestResult(path, "enqueued", jobs=enqueued)
        rejected = any(e.state == "rejected" for e in enqueued)
        target = None
        if move and isinstance(path, Path):
            target = self._aside(path, ".rejected" if rejected else ".accepted")
        kept_at = target.as_uri() if target else read.uri
        for job, e in zip(read.rows, enqueued, strict=True):
            if e.state == "rejected" and job.error:
                result.errors[e.id] = job.error
                self._error_manifest(e, job, kept_at)
        if target is not None and isinstance(path, Path):
            with contextlib.suppress(FileNotFoundError):  # another ingester filed it meanwhile
                path.replace(target)
            result.moved_to = target
        created = [e for e in enqueued if e.created]
        log.info(
            "%s: %s%s",
            source_name(read.uri),
            f"new job(s) {_ids(created)}" if created else f"known job(s) {_ids(enqueued)}",
            "".join(f" ({e.id} rejected: {result.errors[e.id]})" for e in enqueued
                    if e.id in result.errors)[:600],
        )  # fmt: skip
        return result

    def _aside(self, path: Path, folder: str) -> Path:
        """Where a job file is filed: ``<inbox>/<folder>/<its path in the inbox>``, a
        new name if that one is taken (the same name dropped again)."""
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            rel = Path(path.name)
        target = self.inbox / folder / rel
        if target.parent not in self._made_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(target.parent)
        if os.path.lexists(target):
            target = target.with_name(f"{target.stem}.{time.time_ns() // 1000}{target.suffix}")
        return target

    def _error_manifest(self, e: queue.Enqueued, job: queue.NewJob, kept_at: str) -> None:
        doc = publish.rejected_manifest(
            e.id, name=job.name, task=job.task, source_uri=job.source_uri,
            source_entry=job.source_entry, source_sha256=job.source_sha256, kept_at=kept_at,
            excerpt=(job.spec or {}).get("excerpt"), error=job.error,
        )  # fmt: skip
        try:
            publish.publish_rejection(self.outputs_root, e.id, doc)
        except UnsafeFolder as exc:
            log.warning("job %d: no error manifest written: %s", e.id, exc)

    # ------------------------------------------------------------------ a whole inbox

    def scan(
        self,
        *,
        grace: bool = True,
        settle_s: float = 0.0,
        looks: dict[Path, tuple[int, int, int]] | None = None,
    ) -> list[IngestResult]:
        """Ingest every job file under the inbox (dot-folders such as .accepted skipped).

        ``settle_s``: skip files modified that recently. ``looks`` (the watcher's): what
        the previous scan saw of each file (size, modification time, inode), replaced by
        what this one sees; a file is read only once two looks agree. A scan cannot tell
        a file that is still being written from a finished one by one look: a writer
        that pauses longer than ``settle_s`` would have half its file read.
        """
        now = time.time()
        seen: dict[Path, tuple[int, int, int]] = {}
        paths = []
        for path in self.job_files():
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # moved away meanwhile (another ingester took it)
                continue
            except OSError:  # a name the file system will not look up: ingest says why
                paths.append(path)
                continue
            seen[path] = (st.st_size, st.st_mtime_ns, st.st_ino)
            if settle_s and now - st.st_mtime < settle_s:
                continue
            if looks is not None and looks.get(path) != seen[path]:
                continue
            paths.append(path)
        if looks is not None:
            looks.clear()
            looks.update(seen)
        results = []
        for start in range(0, len(paths), SCAN_BATCH):
            results += self.ingest_paths(paths[start : start + SCAN_BATCH], move=True, grace=grace)
        return results

    def job_files(self) -> list[Path]:
        """Every job file under the inbox, in name order (dot-folders skipped)."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(self.inbox):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(Path(dirpath, f) for f in filenames if is_job_file(Path(f)))
        return sorted(found)


SCAN_BATCH = 500  # files read, then stored in one go, by a scan


def _packs(sizes: list[int], budget: int) -> list[list[int]]:
    """Indices of files grouped so that a group's rows stay within ``budget`` (a file
    larger than that forms a group of its own, stored in parts)."""
    packs: list[list[int]] = []
    used = budget
    for i, n in enumerate(sizes):
        if used + n > budget or not packs:
            packs.append([])
            used = 0
        packs[-1].append(i)
        used += n
    return packs


def _entry_groups(rows: list[queue.NewJob], budget: int) -> list[list[queue.NewJob]]:
    """A file's rows in parts of about ``budget`` rows, an entry's stages never split
    (a stage is linked to its parent in the transaction that makes it)."""
    parts: list[list[queue.NewJob]] = [[]]
    for i, row in enumerate(rows):
        if len(parts[-1]) >= budget and row.stage == 0 and i:
            parts.append([])
        parts[-1].append(row)
    return parts


def _key(j: queue.NewJob) -> queue.Key:
    return j.source_uri, j.source_sha256, j.source_entry, j.stage


def _ids(enqueued: list[queue.Enqueued]) -> str:
    ids = [e.id for e in enqueued]
    return ", ".join(map(str, ids)) if len(ids) <= 6 else f"{ids[0]}..{ids[-1]} ({len(ids)})"


def _age_s(modified: datetime | None) -> float:
    return (datetime.now(UTC) - modified).total_seconds() if modified else float("inf")
