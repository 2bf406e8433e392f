"""Publishing a job's outputs: its artifacts, its preview and, last, its manifest.

Every manifest is written and read here, through ``storage.objects``, so a local folder
and an ``s3://`` prefix behave alike: a job's succeeded or failed manifest (the runner),
a rejected job file's (the ingester) and the reading of any of them (``manage.py
status``). A job's outputs count only once ``manifest.json`` exists, so a reader that
sees the manifest sees every artifact it lists, whole. A re-run after a crash rewrites
the same names in the same folder; a published (succeeded) manifest is never replaced,
and a folder holding another job's manifest is never written into (``check_folder``).
Nothing here touches the database: what a manifest needs is read before.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from adapters.base import Result
from geometry.measures import mesh_stats
from geometry.png import png_bytes
from geometry.render import render
from storage import objects
from storage.errors import InputError, StorageError, TransientError, UnsafeFolder
from storage.mesh_export import export_mesh

log = logging.getLogger("gen3d.runner")
HOST = platform.node()
MEDIA_TYPES = {
    ".glb": "model/gltf-binary",
    ".obj": "model/obj",
    ".mtl": "model/mtl",
    ".ply": "application/ply",
    ".stl": "model/stl",
    ".png": "image/png",
    ".json": "application/json",
    ".npy": "application/x-npy",
}
MANIFEST = "manifest.json"
MANIFEST_LIMIT = 1 << 24  # no manifest is near this; more is not a manifest


@dataclass
class Written:
    name: str
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.bytes, "sha256": self.sha256,
                "media_type": _media(self.name)}  # fmt: skip


class AlreadyPublished(Exception):
    """The job's outputs hold a succeeded manifest already (an earlier attempt's)."""


class ForeignOutputs(UnsafeFolder):
    """The job's folder holds another job's manifest: ids restarted (the database was
    replaced or deleted), and writing would overwrite that job's results."""


@dataclass
class Published:
    written: list[Written]  # what this attempt wrote ([]: an earlier attempt's result stands)
    mesh_uri: str | None  # the stage's mesh, a chained stage's input


def publish(
    root: str,
    job: dict[str, Any],
    res: Result,
    *,
    model: dict[str, Any],
    load_s: float,
    infer_s: float,
    runner: str,
    chain: list[dict[str, Any]] | None = None,
) -> Published:
    """Write a succeeded job's outputs into its folder under ``root``: the mesh in the
    job's format, the adapter's artifacts, the preview, then the manifest.

    Raises what the storage raises (``UnsafeFolder`` for a folder that is not the job's
    to write); the caller tells a storage outage from the job's own failure.
    """
    t0 = time.perf_counter()
    folder = job["outputs_uri"]
    try:
        # Before anything is written: a real folder of ours, not another job's.
        earlier = check_folder(root, job)
        if earlier is not None and earlier.get("state") == "succeeded":
            # An earlier attempt published its result and died before recording it.
            log.info("job %d: outputs already published at %s; keeping them", job["id"], folder)
            return Published([], _mesh_uri(folder, earlier.get("mesh_artifact")))
        files = {a.name: a.data for a in res.artifacts}
        mesh_name = res.mesh_artifact
        if res.mesh is not None and mesh_name is None:
            fmt = job["output_format"]
            files = {**export_mesh(res.mesh, fmt), **files}  # e.g. mesh.obj, .mtl, texture
            mesh_name = f"mesh.{fmt}"
        written = [write_artifact(folder, n, data) for n, data in files.items()]
        stats = mesh_stats(res.mesh) if res.mesh is not None else None
        preview = res.preview_rgb
        if preview is None and res.mesh is not None:
            preview = render(res.mesh)
        if preview is not None:
            written.append(write_artifact(folder, "preview.png", png_bytes(preview)))
        timings = {"load_s": load_s, "inference_s": infer_s, "write_s": time.perf_counter() - t0}
        doc = manifest(job, state="succeeded", model=model, artifacts=written, timings=timings,
                       runner=runner, mesh=stats, mesh_artifact=mesh_name, chain=chain,
                       info=res.info)  # fmt: skip
        write_manifest(folder, doc)
    except AlreadyPublished:
        log.warning("job %d: another attempt published first; its result stands", job["id"])
        return Published([], _mesh_uri(folder, (read_manifest(folder) or {}).get("mesh_artifact")))
    return Published(written, _mesh_uri(folder, mesh_name))


def publish_failure(
    root: str,
    job: dict[str, Any],
    *,
    model: dict[str, Any],
    timings: dict[str, float],
    runner: str,
    error: str,
) -> None:
    """Write the manifest of a job that failed for good, if its folder is the job's to
    write (a published result stays; trouble writing is logged, the failure stands)."""
    doc = manifest(job, state="failed", model=model, artifacts=[], timings=timings,
                   runner=runner, error=error, finished_at=datetime.now(UTC))  # fmt: skip
    try:
        check_folder(root, job)
        write_manifest(job["outputs_uri"], doc)
    except UnsafeFolder as refused:
        log.warning("job %d: no error manifest written: %s", job["id"], refused)
    except (OSError, TransientError, StorageError, AlreadyPublished):
        log.exception("could not write the error manifest of job %d", job["id"])


def rejected_folder(root: str, job_id: int) -> str:
    """Where a job rejected at ingest has its manifest: apart from the jobs that ran."""
    return objects.join(root, "rejected", str(job_id))


def rejected_manifest(
    job_id: int,
    *,
    name: str | None,
    task: str,
    source_uri: str,
    source_entry: int,
    source_sha256: str,
    kept_at: str,
    excerpt: str | None,
    error: str | None,
) -> dict[str, Any]:
    """The manifest of a job file (or entry) rejected at ingest: what was refused and
    why, and where its original bytes are kept."""
    return {
        "manifest_version": 1,
        "job_id": job_id,
        "state": "rejected",
        "name": name,
        "task": task,
        "source": {
            "uri": source_uri,
            "entry": source_entry if source_entry >= 0 else None,
            "sha256": source_sha256,
            "kept_at": kept_at,
        },
        "excerpt": excerpt,
        "error": error,
        "rejected_at": datetime.now(UTC),
        "artifacts": [],
    }


def publish_rejection(root: str, job_id: int, doc: dict[str, Any]) -> None:
    """Write a rejected job's manifest once: one already there (another ingester's, or
    an earlier scan's) stays. Raises ``UnsafeFolder`` when the folder is not a real one
    of ours, with the reason."""
    folder = rejected_folder(root, job_id)
    target = objects.join(folder, MANIFEST)
    objects.ensure_folder(root, folder)  # a real folder of ours
    if objects.head(target) is not None:
        return
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    with contextlib.suppress(objects.Conflict):  # another ingester wrote it meanwhile
        objects.write(target, data, if_absent=True)


def check_folder(root: str, job: dict[str, Any]) -> dict[str, Any] | None:
    """Make sure the job's folder may be written into, before anything is; returns the
    manifest an earlier attempt of this very job left there (None: none).

    The folder must be a real directory inside the outputs ``root`` (no symbolic link:
    ``objects.ensure_folder``) and hold no other job's manifest: ids restart when the
    database is replaced, and the new job 1 must not overwrite the old job 1's results.
    A job is known by its id, source (URI, sha256, entry) and the time it was queued.
    Raises ``UnsafeFolder`` (``ForeignOutputs`` for another job's manifest), with the
    reason. Temp files that killed writers left there are removed.
    """
    folder = job["outputs_uri"]
    if objects.ensure_folder(root, folder):
        return None  # made just now: empty
    data = _manifest_bytes(folder)
    doc: Any = None
    if data is not None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = "not JSON"
        if not (isinstance(doc, dict) and _same_job(doc, job)):
            raise ForeignOutputs(_foreign(folder, doc))
    objects.remove_leftovers(folder)
    return doc


def _manifest_bytes(folder: str) -> bytes | None:
    """The manifest in ``folder`` as it is (None: there is none). A local one is opened
    without following a symbolic link (b"": something that is not a manifest is there)."""
    uri = objects.join(folder, MANIFEST)
    if objects.is_s3(uri):
        try:
            return objects.read(uri, MANIFEST_LIMIT, what="manifest")
        except InputError:  # no such key
            return None
    try:
        fd = os.open(uri, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link
            return b""
        raise
    try:
        with os.fdopen(fd, "rb") as fh:
            return fh.read(MANIFEST_LIMIT)
    except IsADirectoryError:
        return b""


def _same_job(doc: dict[str, Any], job: dict[str, Any]) -> bool:
    source, timings = doc.get("source"), doc.get("timings")
    if not isinstance(source, dict) or not isinstance(timings, dict):
        return False
    entry = job["source_entry"] if job["source_entry"] >= 0 else None
    return (
        doc.get("job_id") == job["id"]
        and source.get("uri") == job["source_uri"]
        and source.get("sha256") == job["source_sha256"]
        and source.get("entry") == entry
        and _instant(timings.get("queued_at")) == job["created_at"]
    )


def _instant(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _foreign(folder: str, doc: Any) -> str:
    again = "the database may have been replaced; move that folder away, then retry the job"
    if not isinstance(doc, dict):
        return (
            f"outputs folder {folder} holds a manifest.json that is not a job's manifest; {again}"
        )
    source: dict[str, Any] = doc["source"] if isinstance(doc.get("source"), dict) else {}
    timings: dict[str, Any] = doc["timings"] if isinstance(doc.get("timings"), dict) else {}
    entry = f" entry {source['entry']}" if source.get("entry") is not None else ""
    return (
        f"outputs folder {folder} holds the results of another job (job {doc.get('job_id')},"
        f" {doc.get('state')}, source {source.get('uri')}{entry}, queued"
        f" {timings.get('queued_at')}); {again}"
    )


def write_artifact(folder: str | Path, name: str, data: bytes) -> Written:
    objects.write(objects.join(str(folder), name), data, content_type=_media(name))
    return Written(name, len(data), hashlib.sha256(data).hexdigest())


def manifest(
    job: dict[str, Any],
    *,
    state: str,
    model: dict[str, Any],
    artifacts: list[Written],
    timings: dict[str, float],
    runner: str,
    mesh: dict[str, Any] | None = None,
    mesh_artifact: str | None = None,
    chain: list[dict[str, Any]] | None = None,
    info: dict[str, Any] | None = None,
    error: str | None = None,
    finished_at: datetime | None = None,
) -> dict[str, Any]:
    # Times stay datetimes (UTC, from the database): orjson writes them as ISO 8601,
    # the same text as isoformat(), without a string made per field per job.
    finished_at = finished_at or datetime.now(UTC)
    created, started = job["created_at"], job["started_at"]
    return {
        "manifest_version": 1,
        "job_id": job["id"],
        "name": job["name"],
        "state": state,
        "source": {
            "uri": job["source_uri"],
            "entry": job["source_entry"] if job["source_entry"] >= 0 else None,
            "sha256": job["source_sha256"],
        },
        "task": job["task"],
        "model": model,
        "params": job["params"],
        "seed": job["seed"],
        "attempt": job["attempts"],
        "inputs": _inputs(job["inputs"]),
        "output_format": job["output_format"],
        "timings": {
            "queued_at": created,
            "started_at": started,
            "finished_at": finished_at,
            "wait_s": round((started - created).total_seconds(), 4) if started else None,
            **{k: round(v, 4) for k, v in timings.items()},
        },
        "artifacts": [a.as_dict() for a in artifacts],
        "mesh_artifact": mesh_artifact,  # the stage's mesh; a chained stage's input
        "mesh": mesh,
        **({"chain": chain} if chain else {}),
        "info": info or {},
        "runner": {"id": runner, "host": HOST},
        "error": error,
    }


def _inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """The job's inputs for its manifest, each inline picture (a ``data:`` URI, alone or
    in a list such as ``images``) replaced by a short note of what it was: a manifest
    must not carry megabytes of base64 per job."""
    hashes = inputs.get("image_sha256") or []

    def note(value: Any, sha: Any = None) -> Any:
        if not (isinstance(value, str) and value.startswith("data:")):
            return value
        head, _, payload = value.partition(",")
        size = len(payload) * 3 // 4 - (len(payload) - len(payload.rstrip("=")))
        kind = head[len("data:") :].split(";")[0] or "data"
        return f"(inline {kind}, {size} bytes" + (f", sha256 {sha})" if sha else ")")

    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if key == "images" and isinstance(value, list):
            shas = hashes if isinstance(hashes, list) and len(hashes) == len(value) else []
            out[key] = [note(v, shas[i] if shas else None) for i, v in enumerate(value)]
        elif isinstance(value, list):
            out[key] = [note(v) for v in value]
        else:
            out[key] = note(value)
    return out


def write_manifest(folder: str | Path, doc: dict[str, Any]) -> None:
    """Write the manifest, last. A published result is never replaced, locally as on S3:
    the first succeeded manifest wins (created only if absent: If-None-Match on S3, a
    hard link locally) and later ones raise ``AlreadyPublished``. An error manifest may
    be replaced (on S3 only the version read, If-Match, so two writers cannot both
    think they replaced it; locally the last writer wins).

    Strict JSON: orjson writes NaN and infinities as null, and numpy values through
    ``default`` as text, so no reader meets a NaN token.
    """
    # orjson: the stdlib encoder falls back to pure Python whenever it indents, and that
    # was a quarter of a no-work job's cost in bench/queue.py.
    data = orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    uri = objects.join(str(folder), MANIFEST)
    try:
        objects.write(uri, data, if_absent=True, content_type="application/json")
        return
    except objects.Conflict:
        pass
    current = _current(uri)
    if current is None or current[0]:
        raise AlreadyPublished(f"{uri} holds a succeeded manifest already")
    objects.write(uri, data, if_match=current[1], content_type="application/json")


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest in ``folder``, local or ``s3://`` (None when there is none, or it is
    not a JSON object)."""
    try:
        data = objects.read(objects.join(str(folder), MANIFEST), MANIFEST_LIMIT, what="manifest")
        doc = orjson.loads(data)
    except (InputError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def published(folder: str | Path) -> bool:
    """Whether the folder holds a succeeded manifest (S3: an earlier attempt's result,
    which a re-run must not overwrite)."""
    current = _current(objects.join(str(folder), MANIFEST))
    return current is not None and current[0]


def _current(uri: str) -> tuple[bool, str] | None:
    """(whether it says succeeded, its ETag) of the manifest there now, in one read;
    None when there is none."""
    try:
        data, info = objects.read_info(uri, MANIFEST_LIMIT, what="manifest")
    except InputError:
        return None
    try:
        succeeded = orjson.loads(data).get("state") == "succeeded"
    except orjson.JSONDecodeError:
        succeeded = False
    return succeeded, info.etag


def _mesh_uri(folder: str, name: str | None) -> str | None:
    return objects.join(folder, name) if name else None


def _media(name: str) -> str:
    return MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
