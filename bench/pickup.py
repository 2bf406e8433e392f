"""Drop-to-row and drop-to-manifest latency of `manage.py serve` on the embedded default.

    python -m bench.pickup [--drops 20] [--json]

Starts a real `serve` process on a scratch SQLite database and folders, then drops
job files one at a time the safe way (write a dotfile, rename it in) and measures
from the rename to (a) the job row's created_at and (b) the manifest appearing.
Goal (issue 3): picked up within a second.
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

from sqlalchemy import create_engine

from bench import common
from db import queue
from db.percentiles import percentile

ROOT = Path(__file__).resolve().parent.parent
PICTURE = ROOT / "examples" / "pictures" / "duck.png"


def run(drops: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="gen3d-pickup-"))
    inbox, outbox, dbfile = work / "inbox", work / "outbox", work / "db.sqlite3"
    inbox.mkdir()
    shutil.copy(PICTURE, inbox / "duck.png")
    env = {**os.environ, "GEN3D_DATABASE_URL": f"sqlite:///{dbfile}", "GEN3D_INBOX": str(inbox),
           "GEN3D_OUTPUTS": str(outbox)}  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "serve"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    pickup, done = [], []
    try:
        engine = create_engine(f"sqlite:///{dbfile}")
        for _ in range(100):  # wait until serve has migrated and is watching
            if dbfile.exists():
                break
            time.sleep(0.1)
        time.sleep(1.0)
        for n in range(1, drops + 1):
            tmp = inbox / f".job{n}.tmp"
            tmp.write_text(
                json.dumps({"task": "mesh", "image": "duck.png", "name": f"d{n}", "seed": n})
            )
            dropped = datetime.now(UTC)
            t0 = time.perf_counter()
            tmp.rename(inbox / f"job{n}.json")
            manifest = outbox / str(n) / "manifest.json"
            while not manifest.exists():
                if time.perf_counter() - t0 > 60 or proc.poll() is not None:
                    raise RuntimeError(f"no manifest for drop {n}")
                time.sleep(0.005)
            done.append(time.perf_counter() - t0)
            with engine.connect() as conn:
                job = queue.get_job(conn, n)
            if job is None:
                raise RuntimeError(f"no row for drop {n}")
            pickup.append((job["created_at"] - dropped).total_seconds())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "drops": drops,
        "pickup_p50_s": round(percentile(pickup, 0.5), 4),
        "pickup_max_s": round(max(pickup), 4),
        "manifest_p50_s": round(percentile(done, 0.5), 3),
        "manifest_p95_s": round(percentile(done, 0.95), 3),
    }


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--drops", type=int, default=20)
    args = parser.parse_args()
    result = run(args.drops)
    common.emit(result, as_json=args.json)


if __name__ == "__main__":
    main()
