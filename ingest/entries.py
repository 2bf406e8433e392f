"""One job file's entries to job rows: the model of each stage, its checked params, and
its inputs resolved, confined and checked.

Pictures are read and probed once per version (their inode, size and modification time,
or their ETag): a burst of job files naming the same picture costs one read. A rejected
entry's row keeps a short escaped excerpt of what was written, never the entry itself:
a rejected file may be anything (a secret that was never meant to be a job).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from adapters.base import Adapter, load_adapter_class
from config import Settings
from config.registry import ModelSpec
from config.text import exception_line, printable, source_name
from db import queue
from ingest.jobfile import Entry, JobSpec, parse
from storage import objects
from storage.errors import InputError, TransientError
from storage.local import confined, read_limited
from storage.objects import StorageError
from storage.pictures import cut_short, probe
from storage.uris import decode_data_uri, local_path, read_mesh_digest

log = logging.getLogger("gen3d.ingest")

EXCERPT_CHARS = 160  # of a rejected entry, in its error manifest and row
PICTURE_CACHE = 512  # pictures remembered by file identity: a burst probes each once


class MissingInput(InputError):
    """An input named by the job file is not there (yet)."""


class UnfinishedInput(InputError):
    """An input is there but, by its own end marker, still being written."""


class EntryChecker:
    """Turns a job file's bytes into rows; one per ingester (it remembers pictures)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = settings.registry
        # A bucket inbox: relative references resolve inside this prefix.
        self.inbox_prefix = (
            settings.inbox.rstrip("/") + "/" if objects.is_s3(settings.inbox) else None
        )
        # (where, identity of the version) -> (sha256, None) or (None, why it was refused)
        self._pictures: OrderedDict[tuple[str, str], tuple[str | None, str | None]] = OrderedDict()

    def rows(
        self,
        data: bytes,
        base: Path | str,
        uri: str,
        sha: str,
        *,
        grace: bool,
        growing: bool,
        age_s: Callable[[], float],
    ) -> list[queue.NewJob] | None:
        """The rows of a job file's entries (rejected ones with their reason); None when
        the file, ``age_s`` old, may still be arriving (an input, or, ``growing``, the
        rest of itself)."""
        ingest = self.settings.ingest
        entries = parse(data, jsonl=uri.lower().endswith(".jsonl"),
                        max_entries=ingest.max_entries_per_file)  # fmt: skip
        unfinished = next((e for e in entries if e.unfinished), None)
        if unfinished and grace and growing and age_s() < ingest.unfinished_grace_s:
            log.info("%s: %s; looking again until it is %g s old", source_name(uri),
                     unfinished.error, ingest.unfinished_grace_s)  # fmt: skip
            return None
        new: list[queue.NewJob] = []
        for entry in entries:
            if entry.index < 0 and entry.raw is None and entry.error:  # the file did not parse
                new.append(self.rejected(entry, uri, sha, entry.error, excerpt=data))
                continue
            try:
                new.extend(self._jobs(entry, base, uri, sha, grace=grace))
            except UnfinishedInput as exc:
                log.info("%s: %s; waiting for the rest of it", source_name(uri), exc)
                return None
            except MissingInput as exc:
                if grace and age_s() < ingest.missing_input_grace_s:
                    log.info("%s: %s; waiting for it to arrive", source_name(uri), exc)
                    return None
                new.append(self.rejected(entry, uri, sha, str(exc)))
            except (InputError, StorageError) as exc:
                new.append(self.rejected(entry, uri, sha, str(exc)))
            except TransientError:
                raise
            except Exception as exc:  # noqa: BLE001 - an input no check foresaw: its rejection
                log.error(
                    "%s: an entry could not be checked: %s",
                    source_name(uri),
                    exception_line(exc, ""),
                )
                log.debug("why", exc_info=True)
                new.append(
                    self.rejected(entry, uri, sha, exception_line(exc, "could not be checked"))
                )
        return new

    def rejected(
        self, entry: Entry, uri: str, sha: str, reason: str, *, excerpt: bytes | None = None
    ) -> queue.NewJob:
        raw = entry.raw if isinstance(entry.raw, dict) else {}
        where = (
            f"entry {entry.index}: " if entry.index >= 0 and not reason.startswith("entry ") else ""
        )
        return queue.NewJob(
            task=_field(raw.get("task"), "?", 16),
            model=_field(raw.get("model"), "?", 100),
            name=_field(raw.get("name"), None, 200),
            source_uri=uri,
            source_sha256=sha,
            source_entry=entry.index,
            state="rejected",
            # Not the entry itself: a rejected file may be anything (a secret that was
            # never meant to be a job), so its row and manifest keep a short excerpt.
            spec={"excerpt": _excerpt(entry.raw, excerpt)},
            error=printable(where + reason),
        )

    def _jobs(
        self, entry: Entry, base: Path | str, uri: str, sha: str, *, grace: bool
    ) -> list[queue.NewJob]:
        """The rows of one entry: its job, then one ``waiting`` row per ``then`` stage.
        ``base``: the job file's folder (local) or its bucket "folder" URI; ``grace``: an
        input written a moment ago may not be whole yet (see ``_version``)."""
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
        inputs = self._inputs(spec, base, grace=grace)
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

    def _inputs(self, spec: JobSpec, base: Path | str, *, grace: bool) -> dict[str, Any]:
        images, hashes = [], []
        for n, ref in enumerate(spec.picture_refs):
            what = "image" if spec.image else f"images[{n}]"
            resolved, sha = self._picture(ref, base, what, grace=grace)
            images.append(resolved)
            hashes.append(sha)
        inputs: dict[str, Any] = {}
        if images:
            inputs["images"] = images
            inputs["image_sha256"] = hashes
        if spec.prompt:
            inputs["prompt"] = spec.prompt
        if spec.mesh:
            inputs["mesh"] = self._ref(spec.mesh, base, "mesh")
            limits = self.settings.limits
            # Read and checked here, so that a bad mesh is rejected, not retried by a
            # runner; the digest of every byte read lets the runner see a swap.
            _, inputs["mesh_sha256"] = read_mesh_digest(
                inputs["mesh"],
                max_bytes=limits.max_mesh_bytes,
                max_faces=limits.max_mesh_faces,
                max_pixels=limits.max_picture_pixels,
                what=f"mesh {_short(spec.mesh)!r}",
            )
        return inputs

    def _picture(self, ref: str, base: Path | str, what: str, *, grace: bool) -> tuple[str, str]:
        """A picture's URI and sha256, checked (read once per version: a burst of job
        files naming the same picture reads and probes it once)."""
        limits = self.settings.limits
        name = f"{what} {_short(ref)!r}"
        if ref.startswith("data:"):
            data = decode_data_uri(ref, limits.max_picture_bytes, what)
            probe(data, max_pixels=limits.max_picture_pixels, name=name)
            return ref, hashlib.sha256(data).hexdigest()
        resolved, version = self._version(self._ref(ref, base, what), what)
        key = (resolved, version)
        known = self._pictures.get(key)
        if known is None:
            try:
                if objects.is_s3(resolved):
                    data = objects.read(resolved, limits.max_picture_bytes, what=what)
                else:
                    data = read_limited(local_path(resolved), limits.max_picture_bytes, what=what)
                    # Its hash is the job's from now on: not that of a half-written file.
                    if grace and cut_short(data) and self._young(resolved):
                        raise UnfinishedInput(f"{name} is not whole yet")
                probe(data, max_pixels=limits.max_picture_pixels, name=name)
                known = (hashlib.sha256(data).hexdigest(), None)
            except UnfinishedInput:
                raise
            except InputError as exc:
                known = (None, str(exc))
            self._pictures[key] = known
            if len(self._pictures) > PICTURE_CACHE:
                self._pictures.popitem(last=False)
        sha, why = known
        if sha is None:
            raise InputError(why or f"{name} cannot be used")
        return resolved, sha

    def _young(self, uri: str) -> bool:
        """Modified within ``ingest.unfinished_grace_s``: a writer may still be at it."""
        try:
            mtime = os.stat(local_path(uri)).st_mtime
        except OSError:
            return False
        return time.time() - mtime < self.settings.ingest.unfinished_grace_s

    def _version(self, uri: str, what: str) -> tuple[str, str]:
        """``uri`` and a name for the version of the input there now: its ETag, or its
        inode, size and modification time."""
        if objects.is_s3(uri):
            info = objects.head(uri)
            if info is None:
                raise MissingInput(f"{what} not found: {uri}")
            return uri, info.etag
        try:
            st = os.stat(local_path(uri))
        except FileNotFoundError:
            raise MissingInput(f"{what} not found: {printable(uri)}") from None
        return uri, f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"

    def _ref(self, ref: str, base: Path | str, what: str) -> str:
        """An input reference as a URI: relative ones resolved against the job file's
        folder and confined to it (a bucket inbox: to its prefix); ``s3://`` ones must
        be inside the bucket inbox or under a prefix of ``ingest.s3_allow``."""
        if "\x00" in ref:
            raise InputError(f"{what} {ref!r} holds a NUL byte")
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
            if ref.endswith("/"):
                raise InputError(f"{what} {ref!r} names a folder, not an object")
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
            try:
                st = path.stat()
            except FileNotFoundError:
                raise MissingInput(
                    f"{what} not found: {ref!r} (looked for {printable(str(path))})"
                ) from None
            except OSError as exc:
                raise InputError(f"{what} {ref!r} cannot be looked up: {exc.strerror}") from None
            if stat.S_ISDIR(st.st_mode):
                raise InputError(f"{what} {ref!r} is a directory, not a file")
            return path.as_uri()
        if objects.head(target) is None:
            raise MissingInput(f"{what} not found: {ref!r} (looked for {target})")
        return target


def _field(value: Any, default: str | None, limit: int) -> Any:
    """A rejected entry's task/model/name as a clean short string (or the default)."""
    if value is None or value == "":
        return default
    return printable(str(value).replace("\x00", ""))[:limit]


def _excerpt(raw: Any, data: bytes | None) -> str:
    """The start of what was written, escaped and short."""
    if data is not None:
        text = data[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    else:
        try:
            text = orjson.dumps(raw).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = repr(raw)
    text = printable(text.replace("\x00", "\\u0000"))
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _short(ref: str) -> str:
    return ref if len(ref) <= 80 else ref[:60] + "..."
