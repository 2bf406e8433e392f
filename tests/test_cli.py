"""manage.py as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pictures import disk_png, write_job

ROOT = Path(__file__).resolve().parent.parent
PNG = disk_png()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("GEN3D_")}
    e.update(
        GEN3D_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        GEN3D_INBOX=str(tmp_path / "inbox"),
        GEN3D_OUTPUTS=str(tmp_path / "outbox"),
        GEN3D_RESCAN_INTERVAL_S="0.5",
        GEN3D_POLL_INTERVAL_S="0.1",
    )
    return e


def manage(
    env: dict[str, str], *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def test_submit_prints_job_ids(env: dict[str, str], tmp_path: Path) -> None:
    path = write_job(
        tmp_path / "jobs", "a.json", [{"task": "mesh", "image": "a.png"}] * 2, a__png=PNG
    )
    out = manage(env, "submit", str(path)).stdout.split()
    assert out == ["1", "queued", "2", "queued"]


def test_submit_of_invalid_input_exits_2_with_a_one_line_reason(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = write_job(
        tmp_path / "jobs",
        "a.json",
        {"task": "mesh", "image": "a.png", "output_format": "fbx"},
        a__png=PNG,
    )
    proc = manage(env, "submit", str(path), check=False)
    assert proc.returncode == 2
    (line,) = [ln for ln in proc.stderr.splitlines() if "rejected" in ln]
    assert "output_format" in line


def test_status_json_lists_every_job_including_unparseable_files(
    env: dict[str, str], tmp_path: Path
) -> None:
    inbox = Path(env["GEN3D_INBOX"])
    write_job(
        inbox,
        "good.json",
        [{"task": "mesh", "image": "a.png", "name": "g"}, {"task": "nope"}],
        a__png=PNG,
    )
    write_job(inbox, "junk.json", "%%% not json")
    manage(env, "ingest", "--once")
    proc = manage(env, "status", "--json")
    doc = json.loads(proc.stdout)  # stdout is one JSON document and nothing else
    jobs = {(Path(j["source"]).name, j["entry"]): j for j in doc["jobs"]}
    assert jobs[("good.json", 0)]["state"] == "queued" and jobs[("good.json", 0)]["name"] == "g"
    assert (
        jobs[("good.json", 1)]["state"] == "rejected"
        and "entry 1" in jobs[("good.json", 1)]["error"]
    )
    junk = jobs[("junk.json", None)]
    assert junk["state"] == "rejected" and "not JSON" in junk["error"]
    assert Path(junk["outputs"], "manifest.json").exists()
    for j in doc["jobs"]:
        assert {
            "id",
            "name",
            "task",
            "model",
            "state",
            "source",
            "entry",
            "error",
            "outputs",
        } <= set(j)
    assert (inbox / ".accepted").exists() is False  # good.json had a bad entry: filed as rejected
    assert sorted(p.name for p in (inbox / ".rejected").iterdir()) == ["good.json", "junk.json"]


def test_run_until_idle_then_status_of_one_job(env: dict[str, str], tmp_path: Path) -> None:
    path = write_job(
        tmp_path / "jobs", "a.json", {"task": "mesh", "image": "a.png", "name": "disk"}, a__png=PNG
    )
    manage(env, "submit", str(path))
    manage(env, "run", "--until-idle")
    doc = json.loads(manage(env, "status", "1", "--json").stdout)
    assert doc["job"]["state"] == "succeeded"
    assert doc["job"]["run_s"] >= 0 and doc["job"]["wait_s"] >= 0  # from job_summary
    assert [e["to_state"] for e in doc["events"]] == ["queued", "running", "succeeded"]
    assert {a["name"] for a in doc["manifest"]["artifacts"]} == {"mesh.glb", "preview.png"}
    assert "succeeded" in manage(env, "status").stdout


def test_serve_picks_up_a_dropped_job_file(env: dict[str, str], tmp_path: Path) -> None:
    inbox = Path(env["GEN3D_INBOX"])
    inbox.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # let it start watching
        (inbox / "cat.png").write_bytes(PNG)
        tmp = inbox / ".cat.json.tmp"  # written under a temp name, renamed in: the safe way to drop
        tmp.write_text(json.dumps({"task": "mesh", "image": "cat.png"}))
        tmp.rename(inbox / "cat.json")
        manifest = Path(env["GEN3D_OUTPUTS"]) / "1" / "manifest.json"
        deadline = time.monotonic() + 60
        while not manifest.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert manifest.exists(), proc.stderr.read() if proc.poll() is not None else "no manifest"
        assert json.loads(manifest.read_text())["state"] == "succeeded"
        assert (Path(env["GEN3D_OUTPUTS"]) / "1" / "preview.png").exists()
        assert (inbox / ".accepted" / "cat.json").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_demo_runs_the_bundled_examples(env: dict[str, str], tmp_path: Path) -> None:
    for var in ("GEN3D_DATABASE_URL", "GEN3D_INBOX", "GEN3D_OUTPUTS"):
        del env[var]  # the embedded defaults, under a scratch working directory
    proc = manage(env, "demo", cwd=tmp_path)
    assert "succeeded" in proc.stdout and "preview.png" in proc.stdout
    manifests = list((tmp_path / "var" / "outbox").glob("*/manifest.json"))
    assert len(manifests) >= 5
    assert all(json.loads(m.read_text())["state"] == "succeeded" for m in manifests)


@pytest.mark.parametrize("verb", ["status", "cancel", "retry"])
def test_a_job_id_past_64_bits_is_a_usage_error_not_a_traceback(
    env: dict[str, str], verb: str
) -> None:
    proc = manage(env, verb, str(2**63), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "JOB_ID" in proc.stderr and str(2**63) in proc.stderr


def test_a_file_named_like_an_option_is_submitted_after_a_double_dash(
    env: dict[str, str], tmp_path: Path
) -> None:
    write_job(tmp_path, "-rf.json", {"task": "mesh", "image": "a.png"}, a__png=PNG)
    out = manage(env, "submit", "--", "-rf.json", cwd=tmp_path).stdout.split()
    assert out == ["1", "queued"]
    assert "submit -- -rf.json" in manage(env, "submit", "--help").stdout


def test_control_characters_in_names_never_reach_the_terminal_raw(
    env: dict[str, str], tmp_path: Path
) -> None:
    forged = "x\n2026-01-01 00:00:00 gen3d.runner WARNING all jobs deleted\x1b[2J"
    path = write_job(tmp_path / "jobs", "a.json", {"task": "mesh", "image": "a.png",
                                                   "name": forged}, a__png=PNG)  # fmt: skip
    manage(env, "submit", str(path))
    for args in (("status",), ("status", "1")):
        out = manage(env, *args).stdout
        assert "\x1b" not in out and "\n2026-01-01" not in out and "x\\n2026" in out
    assert "all jobs deleted\\x1b[2J" in manage(env, "status", "1").stdout
    proc = manage(env, "-vv", "run", "--until-idle")  # at debug each job is logged by name
    assert "\x1b" not in proc.stderr and "\\n2026-01-01" in proc.stderr
    assert not [ln for ln in proc.stderr.splitlines() if ln.startswith("2026-01-01 00:00:00")]


def test_ingest_stops_when_its_database_file_is_deleted(env: dict[str, str]) -> None:
    """Rows written after that would go to a file no other process can see."""
    inbox = Path(env["GEN3D_INBOX"])
    inbox.mkdir(parents=True)
    (inbox / "a.png").write_bytes(PNG)
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "ingest"], env=env,
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        (inbox / "first.json").write_text(json.dumps({"task": "mesh", "image": "a.png"}))
        deadline = time.monotonic() + 30
        while not (inbox / ".accepted" / "first.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        dbfile = Path(env["GEN3D_DATABASE_URL"].removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{dbfile}{suffix}").unlink(missing_ok=True)
        (inbox / "second.json").write_text(json.dumps({"task": "mesh", "image": "a.png"}))
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "was deleted while this process used it" in err
    assert (inbox / "second.json").exists()  # not filed away: no row was made for it
