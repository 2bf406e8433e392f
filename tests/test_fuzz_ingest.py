"""Property: whatever is dropped into the inbox settles.

Arbitrary bytes, arbitrary JSON, job-shaped entries with hostile fields, odd file names
and odd kinds of file (FIFOs, links in and out, loops, folders named like job files)
are dropped into a folder inbox and a bucket inbox. Every job file must become rows (a
rejection carrying its reason counts), none may stay in the inbox, nothing may be
logged at ERROR or with a traceback, and a good file dropped afterwards is ingested.

CI runs a bounded, derandomised number of examples; ``GEN3D_FUZZ_EXAMPLES=2000`` runs
more (and random ones) on a workstation.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import Settings, load_settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from ingest.ingester import Ingester, is_job_file
from tests.pictures import bomb_png, disk_png, eps

EXAMPLES = int(os.environ.get("GEN3D_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 60,
    derandomize=not EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
PNG = disk_png(32)
GOOD = {"task": "mesh", "prompt": "a cup", "model": "builtin-noop", "name": "good"}

# ---------------------------------------------------------------------------- strategies

REFS = [
    "a.png", "ëll ✓.png", "missing.png", "../outside.png", "/etc/passwd", "sub/../a.png",
    "a.png\x00", "x" * 300 + ".png", "pipe.png", "loop.png", "dir.png", "eps.png", "bomb.png",
    "s3://elsewhere/k.png", "http://example.com/a.png", "~/a.png", "", " ",
    "data:image/png;base64," + base64.b64encode(PNG).decode(), "data:,oops",
    "data:image/png;base64,!!!!", "m.obj", "a.png/", ".", "..",
]  # fmt: skip
TASKS = ["mesh", "texture", "segment", "rig", "convert", "fly", "", "MESH"]
MODELS = ["builtin-inflate", "builtin-noop", "builtin-rig", "nope", "", "x" * 200]

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12,
)  # fmt: skip
refs = st.sampled_from(REFS) | st.text(max_size=20)
stages = st.fixed_dictionaries(
    {"task": st.sampled_from(TASKS)},
    optional={"model": st.sampled_from(MODELS), "params": json_values,
              "output_format": st.sampled_from(["glb", "fbx", 3])},
)  # fmt: skip
jobs = st.fixed_dictionaries(
    {"task": st.sampled_from(TASKS)},
    optional={
        "image": refs, "images": st.lists(refs, max_size=18), "mesh": refs,
        "prompt": st.text(max_size=40), "model": st.sampled_from(MODELS),
        "params": st.dictionaries(st.sampled_from(["resolution", "sleep_s", "steps", "x"]),
                                  json_values, max_size=3),
        "seed": st.integers(min_value=-(2**70), max_value=2**70),
        "priority": st.integers(min_value=-5000, max_value=5000),
        "name": st.text(max_size=40), "output_format": st.sampled_from(["glb", "obj", "fbx"]),
        "then": st.lists(stages, max_size=10), "max_attempts": st.integers(-3, 30),
        "unknown": json_values,
    },
)  # fmt: skip


def _jsonl(docs: list[Any]) -> bytes:
    return "\n".join(json.dumps(d) for d in docs).encode()


contents = st.one_of(
    st.binary(max_size=400),
    json_values.map(lambda v: json.dumps(v).encode()),
    jobs.map(lambda j: json.dumps(j).encode()),
    st.lists(jobs, max_size=5).map(lambda js: json.dumps(js).encode()),
    st.lists(jobs | json_values, max_size=5).map(_jsonl),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"[" * 5000, b'{"task": NaN}', b"\x00" * 64,
                     b'{"task": "mesh", "image": "a.png"', b"\xff\xfe{}", b"nul\x00l"]),
)  # fmt: skip
names = st.text(
    st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1,
    max_size=40,
).map(lambda s: s.lstrip(".~#") or "x")  # fmt: skip
KINDS = ["file", "file", "file", "fifo", "link-out", "link-in", "dangling", "loop", "folder"]
drops = st.lists(
    st.tuples(names, st.sampled_from([".json", ".jsonl", ".JSON"]), st.sampled_from(KINDS),
              contents),
    min_size=1, max_size=4, unique_by=lambda d: (d[0] + d[1]).lower(),
)  # fmt: skip

# ---------------------------------------------------------------------------- harness


class _Loud(logging.Handler):
    """Remembers what was logged at ERROR or with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or (record.exc_info and record.levelno > 10):
            self.bad.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def loud() -> Iterator[_Loud]:
    handler = _Loud()
    logger = logging.getLogger("gen3d")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _settings(db_url: str, inbox: str, outputs: str, **ingest: Any) -> Settings:
    return load_settings(
        env={}, database_url=db_url, inbox=inbox, outputs=outputs,
        ingest={"max_job_file_bytes": 4096, "missing_input_grace_s": 0,
                "unfinished_grace_s": 0, **ingest},
    )  # fmt: skip


def _furnish(inbox: Path, outside: Path) -> None:
    """What the hostile references point at."""
    inbox.mkdir(parents=True)
    (inbox / "a.png").write_bytes(PNG)
    (inbox / "ëll ✓.png").write_bytes(PNG)
    (inbox / "eps.png").write_bytes(eps())
    (inbox / "bomb.png").write_bytes(bomb_png())
    (inbox / "dir.png").mkdir()
    (inbox / "m.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    os.mkfifo(inbox / "pipe.png")
    os.symlink("loop.png", inbox / "loop.png")
    (outside / "outside.png").write_bytes(PNG)
    (outside / "secret.json").write_text(json.dumps(GOOD))


def _drop(inbox: Path, outside: Path, name: str, kind: str, data: bytes) -> None:
    path = inbox / name
    if kind == "file":
        path.write_bytes(data)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-out":
        os.symlink(outside / "secret.json", path)
    elif kind == "link-in":
        (inbox / ".real").mkdir(exist_ok=True)
        (inbox / ".real" / name).write_bytes(data)
        os.symlink(Path(".real") / name, path)
    elif kind == "dangling":
        os.symlink("nowhere", path)
    elif kind == "loop":
        os.symlink(name, path)
    elif kind == "folder":
        path.mkdir()


def _left(inbox: Path) -> list[str]:
    """Job files still in the inbox (folders named like job files are folders)."""
    left = []
    for _dirpath, dirnames, filenames in os.walk(inbox):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        left += [f for f in filenames if is_job_file(Path(f))]
    return left


def _check_rows(ing: Ingester, results: list[Any]) -> None:
    for r in results:
        assert r.status == "enqueued" and r.jobs, (r.path, r.status)
        for job_id, reason in r.errors.items():
            assert reason.strip() and not _raw_controls(reason), (job_id, reason)


def _raw_controls(text: str) -> list[str]:
    """Control, format (bidi override) and surrogate characters: what must reach no
    terminal raw."""
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cs")
            or 0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069]  # fmt: skip


# ---------------------------------------------------------------------------- folder


@pytest.mark.timeout(900)
@FUZZ
@given(dropped=drops)
def test_every_file_dropped_into_a_folder_inbox_settles(
    dropped: list[tuple[str, str, str, bytes]], db_url: str, tmp_path: Path, loud: _Loud
) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    inbox, outside = work / "inbox", work / "outside"
    outside.mkdir()
    _furnish(inbox, outside)
    db = Database(create(db_url))
    try:
        ing = Ingester(_settings(db_url, str(inbox), str(work / "outbox")), db)
        for name, suffix, kind, data in dropped:
            _drop(inbox, outside, name + suffix, kind, data)
        results = ing.scan(grace=True)
        _check_rows(ing, results)
        assert _left(inbox) == [], "files left in the inbox"
        assert loud.bad == []
        (inbox / "after.json").write_text(json.dumps(GOOD))
        (after,) = ing.scan(grace=True)
        assert [e.state for e in after.jobs] == ["queued"]
    finally:
        db.dispose()


# ---------------------------------------------------------------------------- bucket


# No control characters: moto's server answers 404 to a PUT of such a key (S3 takes them).
keys = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs", "Cc")),
    min_size=1, max_size=40,
).map(lambda s: s.lstrip("./~#") or "x")  # fmt: skip


@pytest.mark.timeout(900)
@settings(FUZZ, max_examples=EXAMPLES or 25)
@given(objs=st.lists(st.tuples(keys, st.sampled_from([".json", ".jsonl"]), contents),
                     min_size=1, max_size=4, unique_by=lambda o: o[0] + o[1]))  # fmt: skip
def test_every_object_put_into_a_bucket_inbox_settles(
    objs: list[tuple[str, str, bytes]], aws: None, tmp_path: Path, loud: _Loud
) -> None:
    from ingest.bucket import BucketIngester
    from storage import objects

    bucket = f"fuzz-{uuid.uuid4().hex[:12]}"
    objects.client().create_bucket(Bucket=bucket)
    db_url = f"sqlite:///{tempfile.mkdtemp(dir=tmp_path)}/fuzz.sqlite3"
    db = Database(create(db_url))
    upgrade(db)
    try:
        settings_ = _settings(db_url, f"s3://{bucket}/inbox", f"s3://{bucket}/out",
                              s3_allow=["s3://elsewhere/"])  # fmt: skip
        ing = BucketIngester(Ingester(settings_, db), queue_url=None)
        objects.write(f"s3://{bucket}/inbox/a.png", PNG)
        for key, suffix, data in objs:
            objects.write(f"s3://{bucket}/inbox/{key}{suffix}", data)
        ing.reconcile()
        with db.read() as conn:
            stored = {uri for uri, _, _, _ in queue.known(conn, _versions(bucket))}
        wanted = {f"s3://{bucket}/inbox/{k}{s}" for k, s, _ in objs if _is_job(k + s)}
        assert wanted <= stored, f"objects without rows: {sorted(wanted - stored)}"
        assert ing.reconcile() == 0  # every one settled: a second listing makes nothing
        assert loud.bad == []
        objects.write(f"s3://{bucket}/inbox/after.json", json.dumps(GOOD).encode())
        assert ing.reconcile() == 1
        with db.read() as conn:
            (after,) = [j for j in queue.list_jobs(conn) if j["source_uri"].endswith("/after.json")]
        assert after["state"] == "queued"
    finally:
        db.dispose()


def _is_job(key: str) -> bool:
    from ingest.bucket import is_job_key

    return is_job_key(f"inbox/{key}")


def _versions(bucket: str) -> set[tuple[str, str]]:
    from storage import objects

    return {(o.uri, o.etag) for o in objects.listing(f"s3://{bucket}/inbox/")}
