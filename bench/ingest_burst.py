"""Ingest throughput: a burst of job files renamed into the inbox of a running ingester.

    python -m bench.ingest_burst [--files 20000] [--pictures 10] [--outside] [--json]
    GEN3D_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/postgres python -m bench.ingest_burst

Starts a real ``manage.py ingest`` (a watching ingester, nothing else) on a scratch
database (a fresh SQLite file, or a throw-away database on the named PostgreSQL server)
and a scratch inbox holding ``--pictures`` pictures. The job files (each a small
``mesh`` job naming one of the pictures, as a burst from a client would) are written
beforehand under dot names, then renamed into the inbox as fast as this process can
(``--outside``: from a folder beside the inbox, which watchdog reports differently).

Timed from the first rename to the last row's ``created_at``. The rows are counted while
the burst runs by ``max(id)`` (one probe of the primary key) every 0.1 s, so the
measuring costs the ingester nothing it would notice. Prints files/s, how long the
renames took, the ingester's CPU per file, whether every row is queued and whether
every file left the inbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common
from bench.queue import _cpu_s, _seconds, runner_env, scratch
from db import queue
from db.engine import Database, create
from db.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
PICTURE = ROOT / "examples" / "pictures" / "duck.png"


def run(files: int, pictures: int = 10, outside: bool = False) -> dict[str, Any]:
    url, drop = scratch(os.environ.get("GEN3D_DATABASE_URL"))
    work = Path(tempfile.mkdtemp(prefix="gen3d-burst-"))
    inbox, staging = work / "inbox", (work / "staging" if outside else work / "inbox")
    inbox.mkdir()
    staging.mkdir(exist_ok=True)
    for p in range(pictures):
        shutil.copy(PICTURE, inbox / f"p{p}.png")
    names = []
    for n in range(files):
        doc = {"task": "mesh", "image": f"p{n % pictures}.png", "name": f"burst {n}"}
        (staging / f".j{n:06}.tmp").write_text(json.dumps(doc))
        names.append(f"j{n:06}.json")
    old = time.time() - 60  # written a while ago, as a client's finished files would be
    for n in range(files):
        os.utime(staging / f".j{n:06}.tmp", (old, old))
    db = Database(create(url))
    upgrade(db)
    env, outputs = runner_env(url)
    env.update(GEN3D_INBOX=str(inbox))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "ingest"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Up and watching: a first file dropped after start-up has become a row.
        (inbox / "warm.json").write_text(json.dumps({"task": "mesh", "image": "p0.png"}))
        _until(lambda: _max_id(db) >= 1, proc, what="the warm-up job")
        time.sleep(1.0)
        cpu0 = _cpu_s([proc.pid])
        first = datetime.now(UTC)
        t0 = time.perf_counter()
        for n, name in enumerate(names):
            os.rename(staging / f".j{n:06}.tmp", inbox / name)
        renames_s = time.perf_counter() - t0
        _until(lambda: _max_id(db) >= files + 1, proc, what=f"{files} rows")
        cpu_s = sum(_cpu_s([proc.pid]).values()) - sum(cpu0.values())
        with db.read() as conn:
            burst = queue.arrivals(conn, after_id=1)  # the warm-up job is row 1
        last = max(a.created_at for a in burst)
        queued = sum(a.state == "queued" for a in burst)
        _until(lambda: not any(p.suffix == ".json" for p in inbox.iterdir()), proc,
               what="the inbox to empty")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        db.dispose()
        drop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(outputs, ignore_errors=True)
    seconds = _seconds(last) - first.timestamp()
    return {
        "database": url.split(":", 1)[0],
        "files": files,
        "renamed_from": "outside the inbox" if outside else "dot names in the inbox",
        "renames_s": round(renames_s, 3),
        "first_rename_to_last_row_s": round(seconds, 3),
        "files_per_s": round(files / seconds),
        "ingest_cpu_ms_per_file": round(1000 * cpu_s / files, 3),
        "rows_queued": queued,
    }


def _max_id(db: Database) -> int:
    with db.read() as conn:
        return queue.last_id(conn)


def _until(cond: Any, proc: subprocess.Popen[bytes], *, what: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise RuntimeError(f"the ingester exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--pictures", type=int, default=10)
    parser.add_argument("--outside", action="store_true",
                        help="rename the files in from a folder beside the inbox")  # fmt: skip
    args = parser.parse_args()
    common.emit(run(args.files, args.pictures, args.outside), as_json=args.json)


if __name__ == "__main__":
    main()
