"""One job file to job rows: read, validate, resolve inputs, enqueue, file it away.

Order matters for "nothing is lost, nothing is doubled": rows commit first (keyed by
source URI + content hash + entry, so a repeat is a no-op), then error manifests are
written (idempotently), and only then is the file moved out of the inbox. A crash at
any point leaves the file in the inbox for the next scan, which finds the rows
already there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters.base import Adapter, load_adapter_class
from config import Settings
from config.registry import ModelSpec
from db import queue
from db.engine import Database
from ingest.jobfile import Entry, JobSpec, parse
from storage import objects
from storage.errors import InputError
from storage.local import confined, read_limited
from storage.pictures import probe
from storage.uris import decode_data_uri, read_mesh

log = logging.getLogger("gen3d.ingest")

JOB_SUFFIXES = (".json", ".jsonl")
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")


def is_job_file(path: Path) -> bool:
    """Job files only: no dotfiles (ours or editors'), no temp names, no pictures."""
    name = path.name
    if name.startswith((".", "~", "#")) or name.endswith(TEMP_SUFFIXES):
        return False
    return name.lower().endswith(JOB_SUFFIXES)


class MissingInput(InputError):
    """An input named by the job file is not there (yet)."""


@dataclass
class IngestResult:
    path: Path | str  # a local path, or the s3:// URI of a bucket object
    status: str  # "enqueued", "deferred" (an input has not arrived yet), "ignored"
    jobs: list[queue.Enqueued] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # job id -> reason, rejected ones
    moved_to: Path | None = None

    @property
    def rejected(self) -> bool:
        return bool(self.errors)


class Ingester:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.registry = settings.registry
        self.outputs_root = settings.outputs_root
        # A bucket inbox: relative references resolve inside this prefix.
        self.inbox_prefix = (
            settings.inbox.rstrip("/") + "/" if objects.is_s3(settings.inbox) else None
        )

    # ------------------------------------------------------------------ one file

    def ingest_path(self, path: Path, *, move: bool, grace: bool) -> IngestResult:
        """Turn one job file into rows.

        ``move``: file it under ``.accepted/`` or ``.rejected/`` of the inbox afterwards.
        ``grace``: a missing picture may still be on its way; while the file is younger
        than the grace period, leave it for a later scan instead of rejecting it.
        """
        path = path.absolute()
        uri = path.as_uri()
        try:
            data = read_limited(path, self.settings.ingest.max_job_file_bytes, what="job file")
        except InputError as exc:
            if not path.exists():  # gone before we got to it (moved by another ingester)
                return IngestResult(path, "ignored")
            sha = _stream_sha256(path)
            return self._commit(
                path, [self._rejected(Entry(-1, None), uri, sha, str(exc))], move=move
            )
        sha = hashlib.sha256(data).hexdigest()
        new = self._rows(data, path.parent, uri, sha, grace=grace,
                         age_s=lambda: time.time() - path.stat().st_mtime)  # fmt: skip
        if new is None:
            return IngestResult(path, "deferred")
        return self._commit(path, new, move=move)

    def ingest_object(self, info: objects.ObjectInfo, *, grace: bool = True) -> IngestResult:
        """Turn one job object of a bucket inbox into rows; the object stays where it is.

        Its identity is (URI, ETag): a redelivered or duplicated event, or a listing
        that sees it again, finds the rows already there.
        """
        read = self.read_object(info, grace=grace)
        return read if isinstance(read, IngestResult) else self.commit_objects([read])[0]

    def read_object(
        self, info: objects.ObjectInfo, *, grace: bool = True
    ) -> tuple[str, list[queue.NewJob]] | IngestResult:
        """Read and validate one job object: (its URI, the rows to make), or a result
        when there is nothing to commit (gone, or waiting for an input)."""
        uri = info.uri
        try:
            data, read = objects.read_info(uri, self.settings.ingest.max_job_file_bytes,
                                           what="job file")  # fmt: skip
        except InputError as exc:
            current = objects.head(uri)
            if current is None:  # deleted before we got to it
                return IngestResult(uri, "ignored")
            return uri, [self._rejected(Entry(-1, None), uri, current.etag, str(exc))]
        etag = read.etag or info.etag  # the version read is the one ingested
        new = self._rows(data, uri.rsplit("/", 1)[0] + "/", uri, etag, grace=grace,
                         age_s=lambda: _age_s(read.modified or info.modified))  # fmt: skip
        return IngestResult(uri, "deferred") if new is None else (uri, new)

    def _rows(
        self,
        data: bytes,
        base: Path | str,
        uri: str,
        sha: str,
        *,
        grace: bool,
        age_s: Callable[[], float],
    ) -> list[queue.NewJob] | None:
        """The rows of a job file's entries (rejected ones with their reason); None when
        an input is missing and the file, ``age_s`` old, may still be waiting for it."""
        new: list[queue.NewJob] = []
        for entry in parse(data, jsonl=uri.lower().endswith(".jsonl")):
            try:
                new.extend(self._jobs(entry, base, uri, sha))
            except MissingInput as exc:
                if grace and age_s() < self.settings.ingest.missing_input_grace_s:
                    log.info("%s: %s; waiting for it to arrive", uri, exc)
                    return None
                new.append(self._rejected(entry, uri, sha, str(exc)))
            except InputError as exc:
                new.append(self._rejected(entry, uri, sha, str(exc)))
        return new

    def commit_objects(self, read: list[tuple[str, list[queue.NewJob]]]) -> list[IngestResult]:
        """The rows of several job objects in one transaction (one commit, not one per
        object: a burst of events is ingested as fast as it is read)."""
        with self.db.write() as conn:
            enqueued = [queue.enqueue_file(conn, new, self.outputs_root) for _, new in read]
        return [self._after_commit(uri, new, e, move=False)
                for (uri, new), e in zip(read, enqueued, strict=True)]  # fmt: skip

    def _rejected(self, entry: Entry, uri: str, sha: str, reason: str) -> queue.NewJob:
        raw = entry.raw if isinstance(entry.raw, dict) else {}
        where = (
            f"entry {entry.index}: " if entry.index >= 0 and not reason.startswith("entry ") else ""
        )
        return queue.NewJob(
            task=str(raw.get("task", "?"))[:16],
            model=str(raw.get("model") or "?")[:100],
            name=str(raw["name"])[:200] if raw.get("name") else None,
            source_uri=uri,
            source_sha256=sha,
            source_entry=entry.index,
            state="rejected",
            spec=entry.raw if _json_safe(entry.raw) else None,
            error=where + reason,
        )

    def _jobs(self, entry: Entry, base: Path | str, uri: str, sha: str) -> list[queue.NewJob]:
        """The rows of one entry: its job, then one ``waiting`` row per ``then`` stage.
        ``base``: the job file's folder (local) or its bucket "folder" URI."""
        if entry.spec is None:
            raise InputError(entry.error or "invalid job")
        spec = entry.spec
        stages = [(spec.task, spec.model, spec.params, spec.output_format)]
        stages += [(s.task, s.model, s.params, s.output_format) for s in spec.then]
        chosen = [self._model(n, *stage[:3]) for n, stage in enumerate(stages)]
        model, params, adapter_cls = chosen[0]
        if spec.picture_refs and "image" not in adapter_cls.accepts:
            raise InputError(f"model {model.id!r} does not take pictures")
        if spec.prompt and not spec.picture_refs and "prompt" not in adapter_cls.accepts:
            raise InputError(
                f"model {model.id!r} needs a picture; it cannot use a text prompt alone"
            )
        given = {"image": bool(spec.picture_refs), "prompt": bool(spec.prompt), "mesh": True}
        for n, (stage_model, _, cls) in enumerate(chosen):
            where = f"then[{n - 1}]: " if n else ""
            if n and "mesh" not in cls.accepts:
                raise InputError(f"{where}model {stage_model.id!r} does not take a mesh")
            missing = [need for need in cls.requires if not given[need]]
            if missing:
                raise InputError(
                    f"{where}model {stage_model.id!r} needs {' and '.join(missing)} input;"
                    f" the job gives none (add {' and '.join(repr(m) for m in missing)})"
                )
        inputs = self._inputs(spec, base)
        pictures = {k: v for k, v in inputs.items() if k in ("images", "image_sha256")}
        rows = []
        for n, ((task, _, _, output_format), (model, params, cls)) in enumerate(
            zip(stages, chosen, strict=True)
        ):
            rows.append(
                queue.NewJob(
                    task=task,
                    model=model.id,
                    name=spec.name,
                    priority=spec.priority,
                    params=params,
                    seed=spec.seed,
                    output_format=output_format,
                    # A later stage's mesh is its parent's output, known once that succeeds.
                    inputs=inputs if n == 0 else (pictures if "image" in cls.accepts else {}),
                    spec=entry.raw if n == 0 else None,
                    source_uri=uri,
                    source_sha256=sha,
                    source_entry=entry.index,
                    max_attempts=spec.max_attempts
                    or model.max_attempts
                    or self.settings.runner.max_attempts,
                    state="queued" if n == 0 else "waiting",
                    stage=n,
                    stages=len(stages),
                )
            )
        return rows

    def _model(
        self, n: int, task: str, model_id: str | None, raw: dict[str, Any]
    ) -> tuple[ModelSpec, dict[str, Any], type[Adapter]]:
        """The model of stage ``n`` (0: the job itself), its checked params and adapter."""
        where = f"then[{n - 1}]: " if n else ""
        try:
            model = self.registry.resolve(task, model_id)
        except KeyError as exc:
            raise InputError(where + str(exc.args[0])) from None
        adapter_cls = load_adapter_class(model.adapter)
        try:
            params = adapter_cls.Params.model_validate(raw).model_dump(mode="json")
        except ValidationError as exc:
            reasons = "; ".join(
                f"unknown parameter {'.'.join(map(str, e['loc']))!r}"
                if e["type"] == "extra_forbidden"
                else f"params.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors()
            )
            raise InputError(f"{where}model {model.id!r}: {reasons}") from None
        return model, params, adapter_cls

    def _inputs(self, spec: JobSpec, base: Path | str) -> dict[str, Any]:
        images, hashes = [], []
        for n, ref in enumerate(spec.picture_refs):
            what = "image" if spec.image else f"images[{n}]"
            data, resolved = self._read_picture(ref, base, what)
            images.append(resolved)
            hashes.append(hashlib.sha256(data).hexdigest())
        inputs: dict[str, Any] = {}
        if images:
            inputs["images"] = images
            inputs["image_sha256"] = hashes
        if spec.prompt:
            inputs["prompt"] = spec.prompt
        if spec.mesh:
            inputs["mesh"] = self._ref(spec.mesh, base, "mesh")
            limits = self.settings.limits
            # Read and checked here, so that a bad mesh is rejected, not retried by a runner.
            read_mesh(
                inputs["mesh"],
                max_bytes=limits.max_mesh_bytes,
                max_faces=limits.max_mesh_faces,
                max_pixels=limits.max_picture_pixels,
                what=f"mesh {_short(spec.mesh)!r}",
            )
        return inputs

    def _read_picture(self, ref: str, base: Path | str, what: str) -> tuple[bytes, str]:
        limits = self.settings.limits
        if ref.startswith("data:"):
            data = decode_data_uri(ref, limits.max_picture_bytes, what)
            resolved = ref
        else:
            resolved = self._ref(ref, base, what)
            if objects.is_s3(resolved):
                data = objects.read(resolved, limits.max_picture_bytes, what=what)
            else:
                data = read_limited(Path(resolved[len("file://") :]), limits.max_picture_bytes,
                                    what=what)  # fmt: skip
        probe(data, max_pixels=limits.max_picture_pixels, name=f"{what} {_short(ref)!r}")
        return data, resolved

    def _ref(self, ref: str, base: Path | str, what: str) -> str:
        """An input reference as a URI: relative ones resolved against the job file's
        folder and confined to it (a bucket inbox: to its prefix); ``s3://`` ones must
        be inside the bucket inbox or under a prefix of ``ingest.s3_allow``."""
        if ref.startswith("s3://"):
            allowed = [self.inbox_prefix] if self.inbox_prefix else []
            allowed += self.settings.ingest.s3_allow
            if not any(ref.startswith(p.rstrip("/") + "/") for p in allowed if p):
                where = (
                    "the bucket inbox or ingest.s3_allow"
                    if self.inbox_prefix
                    else "ingest.s3_allow"
                )
                raise InputError(f"{what} {ref!r}: s3:// inputs outside {where} are not allowed")
            target = ref
        elif "://" in ref:
            raise InputError(
                f"{what} {ref!r}: {ref.split('://', 1)[0]}:// inputs are not supported"
            )
        elif isinstance(base, str):
            assert self.inbox_prefix is not None
            target = objects.confined_key(self.inbox_prefix, base, ref, what=what)
        else:
            path = confined(base, ref, what=what)
            if not path.exists():
                raise MissingInput(f"{what} not found: {ref!r} (looked for {path})")
            if path.is_dir():
                raise InputError(f"{what} {ref!r} is a directory, not a file")
            return path.as_uri()
        if objects.head(target) is None:
            raise MissingInput(f"{what} not found: {ref!r} (looked for {target})")
        return target

    # ------------------------------------------------------------------ commit + file away

    def _commit(self, path: Path | str, new: list[queue.NewJob], *, move: bool) -> IngestResult:
        with self.db.write() as conn:
            enqueued = queue.enqueue_file(conn, new, self.outputs_root)
        return self._after_commit(path, new, enqueued, move=move)

    def _after_commit(
        self,
        path: Path | str,
        new: list[queue.NewJob],
        enqueued: list[queue.Enqueued],
        *,
        move: bool,
    ) -> IngestResult:
        """File the job file away (local), write error manifests, log."""
        result = IngestResult(path, "enqueued", jobs=enqueued)
        kept_at: Path | str = path
        if move and isinstance(path, Path):
            kept_at = _move_aside(
                path,
                self.settings.inbox_path.absolute(),
                ".rejected" if any(j.state == "rejected" for j in enqueued) else ".accepted",
            )
            result.moved_to = kept_at
        for job, e in zip(new, enqueued, strict=True):
            if e.state == "rejected" and job.error:
                result.errors[e.id] = job.error
                self._error_manifest(e, job, kept_at)
        for e in enqueued:
            log.info(
                "%s job %d from %s%s",
                "new" if e.created else "known",
                e.id,
                path.name if isinstance(path, Path) else path,
                f" ({e.state}: {result.errors[e.id]})" if e.id in result.errors else "",
            )
        return result

    def _error_manifest(self, e: queue.Enqueued, job: queue.NewJob, kept_at: Path | str) -> None:
        target = objects.join(self.outputs_root, "rejected", str(e.id), "manifest.json")
        if objects.head(target) is not None:
            return
        manifest = {
            "manifest_version": 1,
            "job_id": e.id,
            "state": "rejected",
            "name": job.name,
            "task": job.task,
            "source": {
                "uri": job.source_uri,
                "entry": job.source_entry if job.source_entry >= 0 else None,
                "sha256": job.source_sha256,
                "kept_at": kept_at.as_uri() if isinstance(kept_at, Path) else kept_at,
            },
            "spec": job.spec,
            "error": job.error,
            "rejected_at": datetime.now(UTC).isoformat(),
            "artifacts": [],
        }
        with contextlib.suppress(objects.Conflict):  # another ingester wrote it meanwhile
            objects.write(target, (json.dumps(manifest, indent=2) + "\n").encode(), if_absent=True)

    # ------------------------------------------------------------------ a whole inbox

    def scan(self, *, grace: bool = True, settle_s: float = 0.0) -> list[IngestResult]:
        """Ingest every job file under the inbox (dot-folders such as .accepted skipped).

        ``settle_s``: skip files modified that recently. A scan cannot tell a file that
        is still being written from a finished one; the watcher's close event (or its
        next scan) covers the fresh ones, so it passes the settle time.
        """
        inbox = self.settings.inbox_path
        inbox.mkdir(parents=True, exist_ok=True)
        results = []
        now = time.time()
        for path in sorted(_walk(inbox)):
            try:
                if settle_s and now - path.stat().st_mtime < settle_s:
                    continue
                results.append(self.ingest_path(path, move=True, grace=grace))
            except FileNotFoundError:  # moved away meanwhile (another ingester took it)
                continue
            except Exception:  # noqa: BLE001 - one file must not stop the scan
                log.exception("ingesting %s failed; it stays in the inbox for the next scan", path)
        return results


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames if is_job_file(Path(dirpath, f)))
    return found


def _stream_sha256(path: Path) -> str:
    """Hash a file too large to load (or not a file: hash its path and size)."""
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    else:
        digest.update(f"{path}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def _move_aside(path: Path, inbox: Path, folder: str) -> Path:
    try:
        rel = path.relative_to(inbox)
    except ValueError:
        rel = Path(path.name)
    target = inbox / folder / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # same name seen before: keep both
        target = target.with_name(f"{target.stem}.{int(time.time() * 1000)}{target.suffix}")
    path.replace(target)
    return target


def _short(ref: str) -> str:
    return ref if len(ref) <= 80 else ref[:60] + "..."


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _age_s(modified: datetime | None) -> float:
    return (datetime.now(UTC) - modified).total_seconds() if modified else float("inf")
