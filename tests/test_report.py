"""`report`: throughput, latency percentiles, failure rates and loads over a window."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from config import load_settings
from db import queue, reports
from db.engine import Database
from runner.loop import Runner
from tests.processes import ROOT


def _enqueue(db: Database, model: str, n: int, tag: str, **kw: object) -> None:
    jobs = [
        queue.NewJob(task="mesh", model=model, source_uri=f"test://{tag}", source_sha256="0" * 64,
                     source_entry=i, inputs={"prompt": "x"}, params={}, **kw)  # type: ignore[arg-type]
        for i in range(n)
    ]  # fmt: skip
    with db.write() as conn:
        queue.enqueue_file(conn, jobs, "/tmp/unused/")


def test_report_counts_outcomes_retries_and_loads(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    settings = load_settings(
        env={}, database_url=db_url, inbox=str(tmp_path / "in"), outputs=str(tmp_path / "out"),
        models={
            "builtin-noop": {"adapter": "adapters.builtin.noop:NoopAdapter", "tasks": ["mesh"],
                             "max_batch": 4},
            "broken": {"adapter": "tests.failing_adapters:EnvironmentFailure", "tasks": ["mesh"]},
        },
        default_models={}, runner={"retry_base_s": 0.0, "retry_max_s": 0.0},
    )  # fmt: skip
    _enqueue(db, "builtin-noop", 6, "ok")
    _enqueue(db, "broken", 1, "bad", max_attempts=2)
    _enqueue(db, "x", 1, "rej", state="rejected", error="bad file")
    Runner(settings, db).run(until_idle=True)
    now = datetime.now(UTC)
    with db.read() as conn:
        doc = reports.report(conn, now - timedelta(hours=1), now + timedelta(seconds=1))
        empty = reports.report(conn, now + timedelta(seconds=1), now + timedelta(seconds=2))
    assert doc["finished"] == {"succeeded": 6, "failed": 1, "rejected": 1, "cancelled": 0}
    assert doc["failure_rate"] == round(1 / 7, 4)
    assert doc["succeeded_per_hour"] >= 6 * 0.99
    assert doc["wait_s"]["p50"] is not None and doc["wait_s"]["p50"] >= 0
    by_model = {m["model"]: m for m in doc["models"]}
    assert (by_model["builtin-noop"]["succeeded"], by_model["builtin-noop"]["loads"]) == (6, 1)
    assert (by_model["broken"]["failed"], by_model["broken"]["retries"]) == (1, 1)
    assert by_model["broken"]["failure_rate"] == 1.0
    assert doc["backlog"] == {"queued": 0, "running": 0, "waiting": 0}
    assert empty["finished"]["succeeded"] == 0 and empty["models"] == []


def test_report_cli_prints_json_and_a_table(tmp_path: Path) -> None:
    env = {"GEN3D_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}", "PATH": "/usr/bin:/bin"}
    run = [sys.executable, str(ROOT / "manage.py"), "report"]
    doc = json.loads(subprocess.run([*run, "--since", "7d", "--json"], env=env, cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert doc["finished"]["succeeded"] == 0 and doc["failure_rate"] is None
    assert datetime.fromisoformat(doc["since"]) < datetime.fromisoformat(doc["until"])
    text = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "0 succeeded" in text and "now: 0 queued" in text
    bad = subprocess.run([*run, "--since", "yesterday"], env=env, cwd=ROOT, capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 2 and "give 24h, 30m, 7d or an ISO timestamp" in bad.stderr
