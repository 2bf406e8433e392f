"""Runner processes for tests: ``manage.py run`` started on a test database with short
leases and intervals, its log kept in a file, and every one started killed after its
test (conftest), so a failed assertion leaves no runner behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOGS: dict[int, Path] = {}
STARTED: list[subprocess.Popen[str]] = []


def start_runner(db_url: str, *args: str, lease_s: float = 1.5) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEN3D_")}
    outputs = tempfile.mkdtemp(prefix="gen3d-runner-out-")  # never the repository's var/
    env.update(GEN3D_DATABASE_URL=db_url, GEN3D_OUTPUTS=outputs, GEN3D_LEASE_S=str(lease_s),
               GEN3D_HEARTBEAT_S="0.3", GEN3D_REAP_INTERVAL_S="0.3",
               GEN3D_POLL_INTERVAL_S="0.05")  # fmt: skip
    # stderr to a file, not a pipe: a runner logs a line per job, and an unread pipe
    # fills up and blocks it.
    fd, log_path = tempfile.mkstemp(prefix="gen3d-runner-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run", *args], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    LOGS[proc.pid] = Path(log_path)
    STARTED.append(proc)
    return proc


def runner_log(proc: subprocess.Popen[str], tail: int | None = 3000) -> str:
    """A runner's log (its tail by default, for assertion messages)."""
    text = LOGS[proc.pid].read_text()
    return text if tail is None else text[-tail:]


def wait_until(cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
