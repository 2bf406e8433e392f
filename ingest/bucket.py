"""A bucket inbox: S3 ObjectCreated events through SQS, and a listing beside them.

With ``GEN3D_INBOX=s3://bucket/prefix`` and ``GEN3D_INBOX_QUEUE`` (an SQS queue that
receives the bucket's ObjectCreated notifications), the ingester long-polls the queue,
ten messages at a time from ``ingest.sqs_consumers`` receives in flight, makes the
rows, and deletes a message only after its rows commit: a crash in between means a
redelivery, which finds the rows already there.
Without a queue, or every ``ingest.list_interval_s`` beside it, it lists the prefix:
the reconciliation that catches events lost on the way. A listing resumes from a
checkpoint in ``ingest_cursors`` if it was interrupted.

An object's identity is its (URI, ETag), read from the object itself rather than from
the event: SQS redelivers, moto (and S3, rarely) sends two events for one multipart
upload, and an object overwritten between two events is one new version, not two.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_plus

from db import cursors, queue
from db.engine import DatabaseReplaced
from ingest.ingester import JOB_SUFFIXES, TEMP_SUFFIXES, Ingester, IngestResult, Read
from storage import objects
from storage.errors import TransientError
from storage.objects import StorageError

log = logging.getLogger("gen3d.ingest.bucket")
PAGE = 1000  # keys between listing checkpoints
RETRY_DEFERRED_S = 1.0  # a job object waiting for its picture is looked at again this soon
WORKERS = 8  # objects read side by side
COMMIT_EVERY = 100  # a listing commits the rows of this many objects at a time
SHORT_POLL_PAUSE_S = 0.05  # with ingest.sqs_wait_s 0, the pause after an empty receive


def is_job_key(key: str) -> bool:
    """Job files only: not pictures, temp names, or anything under a dot-folder."""
    parts = key.split("/")
    if any(p.startswith(".") for p in parts[:-1]):
        return False
    name = parts[-1]
    if not name or name.startswith((".", "~", "#")) or name.endswith(TEMP_SUFFIXES):
        return False
    return name.lower().endswith(JOB_SUFFIXES)


def parse_event(body: str) -> list[tuple[str, str]]:
    """(bucket, key) of each ObjectCreated record of an S3 notification message (also
    wrapped in an SNS envelope); [] for S3's test event and other event kinds."""
    doc = json.loads(body)
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
        doc = json.loads(doc["Message"])  # delivered through SNS
    if not isinstance(doc, dict) or doc.get("Event") == "s3:TestEvent":
        return []
    out = []
    for rec in doc.get("Records") or []:
        if not str(rec.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = rec.get("s3") or {}
        bucket, key = (s3.get("bucket") or {}).get("name"), (s3.get("object") or {}).get("key")
        if bucket and key:
            out.append((bucket, unquote_plus(key)))  # keys arrive URL-encoded, '+' for ' '
    return out


class BucketIngester:
    """Runs in a thread; ``on_result`` is called after each object is committed."""

    def __init__(
        self,
        ingester: Ingester,
        *,
        queue_url: str | None,
        on_result: Callable[[IngestResult], None] | None = None,
    ) -> None:
        if ingester.inbox_prefix is None:
            raise ValueError("BucketIngester needs an s3:// inbox")
        self.ingester = ingester
        self.prefix = ingester.inbox_prefix
        self.bucket, self.key_prefix = objects.split(self.prefix)
        self.queue_url = queue_url
        self.on_result = on_result
        self.settings = ingester.settings.ingest
        self._sqs: Any = None
        self._deferred: dict[str, float] = {}  # uri -> when first deferred
        self._deferred_lock = threading.Lock()
        self._stop = threading.Event()
        self.error: str | None = None  # why it stopped by itself (the database was replaced)
        # One thread lists and retries deferred objects; ``ingest.sqs_consumers`` threads
        # receive, each up to ten messages at a time, so a burst drains in parallel.
        self._loop_thread = threading.Thread(target=self._loop, name="gen3d-bucket", daemon=True)
        self._consumers = [
            threading.Thread(target=self._consume, name=f"gen3d-sqs-{i}", daemon=True)
            for i in range(self.settings.sqs_consumers if queue_url else 0)
        ]
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="gen3d-bucket")

    def start(self) -> None:
        self._loop_thread.start()
        for thread in self._consumers:
            thread.start()

    def stop(self) -> None:
        """Stop without waiting out a long poll: a receive still in flight is abandoned
        (its messages, if any, become visible again and are redelivered)."""
        self._stop.set()
        self._loop_thread.join(timeout=30)
        grace = time.monotonic() + 1.0  # for a consumer committing what it received
        for thread in self._consumers:
            thread.join(timeout=max(grace - time.monotonic(), 0.0))
        self._pool.shutdown(wait=True)

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = objects.make_client("sqs")
        return self._sqs

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        next_list = 0.0  # list at start-up: whatever arrived while nobody listened
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_list:
                    self.reconcile()
                    next_list = time.monotonic() + self.settings.list_interval_s
                self._retry_deferred()
                # Wake at least this often: a consumer may defer an object meanwhile.
                self._stop.wait(min(RETRY_DEFERRED_S, max(next_list - time.monotonic(), 0.0)))
            except DatabaseReplaced as exc:
                self._fail(exc)
            except Exception as exc:  # noqa: BLE001 - a bad moment must not end ingestion
                _hiccup(exc)
                self._stop.wait(2.0)

    def _fail(self, exc: DatabaseReplaced) -> None:
        if self.error is None:
            self.error = str(exc)
            log.error("%s", exc)
        self._stop.set()

    def _consume(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll(wait_s=self.settings.sqs_wait_s) == 0 and not self.settings.sqs_wait_s:
                    self._stop.wait(SHORT_POLL_PAUSE_S)  # short polling: no busy loop
            except DatabaseReplaced as exc:
                self._fail(exc)
            except Exception as exc:  # noqa: BLE001 - a bad moment must not end ingestion
                if self._stop.is_set():
                    return
                _hiccup(exc)
                self._stop.wait(2.0)

    def poll(self, *, wait_s: int = 0) -> int:
        """One receive of up to ten messages; returns how many were handled and deleted."""
        got = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
        )
        messages = got.get("Messages", [])
        if messages and self._stop.is_set():
            return 0  # stopping: left to a redelivery
        parsed: list[tuple[dict[str, Any], list[tuple[str, str]]]] = []
        done = []
        for msg in messages:
            try:
                parsed.append((msg, parse_event(msg["Body"])))
            except (ValueError, TypeError):
                log.warning("not an S3 event notification; dropping it: %.200s", msg["Body"])
                done.append(msg)
        # The objects of one receive are read and ingested side by side: each is a GET and
        # a commit, and S3 round trips dominate.
        keys = [k for _, ks in parsed for k in ks]
        status = dict(zip(keys, self._ingest_many([self._wanted(*k) for k in keys]), strict=True))
        done += [msg for msg, ks in parsed if all(status[k] != "retry" for k in ks)]
        if done:  # only now: every row of these messages has committed
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return len(done)

    def _wanted(self, bucket: str, key: str) -> objects.ObjectInfo | None:
        """The object if it is a job file of this inbox (else: nothing to do). Its ETag
        comes from the GET that reads it, not from the event."""
        if bucket != self.bucket or not key.startswith(self.key_prefix) or not is_job_key(key):
            return None  # a picture, an output, another prefix
        return _unread(f"s3://{bucket}/{key}")

    def _ingest_many(self, infos: list[objects.ObjectInfo | None]) -> list[str]:
        """Read the objects side by side (S3 round trips dominate), commit all their rows in
        one transaction. Per object its status: "skip" (not a job file of this inbox),
        "retry" (leave its event for a redelivery), else the ingest result's status."""

        def read(info: objects.ObjectInfo | None) -> Any:
            if info is None:
                return None
            try:
                return self.ingester.read_object(info)
            except (TransientError, StorageError) as exc:
                log.warning("%s: %s; it will be read again", info.uri, exc)
                return exc

        got = list(self._pool.map(read, infos))
        ready = [g for g in got if isinstance(g, Read)]
        committed = iter(self.ingester.commit(ready, move=False) if ready else [])
        out = []
        for info, g in zip(infos, got, strict=True):
            if info is None:
                out.append("skip")
            elif isinstance(g, Exception):
                out.append("retry")
            else:
                result = next(committed) if isinstance(g, Read) else g
                self._settled(info.uri, result)
                out.append(result.status)
        return out

    def _settled(self, uri: str, result: IngestResult) -> None:
        with self._deferred_lock:
            if result.status in ("deferred", "retry"):  # stored, but its manifest is not
                self._deferred.setdefault(uri, time.monotonic())  # retried from here
            else:
                self._deferred.pop(uri, None)
        if result.status == "enqueued" and self.on_result:
            self.on_result(result)

    def _retry_deferred(self) -> None:
        with self._deferred_lock:
            uris = list(self._deferred)
        if uris:
            self._ingest_many([_unread(uri) for uri in uris])

    # ------------------------------------------------------------------ listing

    def reconcile(self) -> int:
        """List the prefix (from the checkpoint of an interrupted listing) and ingest every
        job object not ingested yet; returns how many objects were new."""
        source = self.prefix
        start = self._checkpoint(source)
        made = 0
        page: list[objects.ObjectInfo] = []
        for info in objects.listing(self.prefix, start_after=start):
            if is_job_key(info.key):
                page.append(info)
            if len(page) >= PAGE:
                made += self._ingest_new(page)
                self._save_checkpoint(source, page[-1].key)
                page = []
        made += self._ingest_new(page)
        self._save_checkpoint(source, None)  # a complete listing starts over next time
        if made:
            log.info("listing %s found %d new job object(s)", self.prefix, made)
        return made

    def _ingest_new(self, infos: Iterable[objects.ObjectInfo]) -> int:
        infos = list(infos)
        if not infos:
            return 0
        with self.ingester.db.read() as conn:
            found = queue.known(conn, {(i.uri, i.etag) for i in infos})
        known = {(uri, sha) for uri, sha, _, _ in found}
        todo = [i for i in infos if (i.uri, i.etag) not in known]
        made = 0
        for start in range(0, len(todo), COMMIT_EVERY):
            chunk = todo[start : start + COMMIT_EVERY]
            made += self._ingest_many(list(chunk)).count("enqueued")
        return made

    def _checkpoint(self, source: str) -> str | None:
        with self.ingester.db.read() as conn:
            return cursors.load(conn, source)

    def _save_checkpoint(self, source: str, start_after: str | None) -> None:
        with self.ingester.db.write() as conn:
            cursors.save(conn, source, start_after)


def _hiccup(exc: Exception) -> None:
    """The infrastructure (database, S3, SQS) away: one line. Anything else is a bug in
    this loop (an object's own trouble is its rejection), so its traceback is kept."""
    from botocore.exceptions import BotoCoreError, ClientError
    from sqlalchemy.exc import InterfaceError, OperationalError

    away = (OperationalError, InterfaceError, TransientError, StorageError, BotoCoreError,
            ClientError)  # fmt: skip
    first = (str(exc).strip().splitlines() or [""])[0]
    log.warning("bucket ingestion hiccup (%s: %s); going on in 2 s", type(exc).__name__, first,
                exc_info=not isinstance(exc, away))  # fmt: skip


def _unread(uri: str) -> objects.ObjectInfo:
    """An object known by its URI alone; reading it fills in the rest."""
    return objects.ObjectInfo(uri, "", "", 0)
