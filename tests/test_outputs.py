"""A job's outputs folder is its own: never written through a symbolic link, never over
another job's results, a published manifest never replaced, no leftovers of killed
writers; and manifests are small strict JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from config import Settings, load_settings
from db import queue
from runner import publish
from runner.loop import Runner
from storage import local, objects
from storage.errors import UnsafeFolder
from tests import runs
from tests.pictures import disk_png

PNG = disk_png()
ROOT = Path(__file__).resolve().parent.parent


def _settings(tmp_path: Path, database: str = "gen3d.sqlite3") -> Settings:
    return load_settings(
        env={},
        database_url=f"sqlite:///{tmp_path / database}",
        inbox=str(tmp_path / "inbox"),
        outputs=str(tmp_path / "outbox"),
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------- publishing


def test_a_published_local_manifest_is_never_replaced(tmp_path: Path) -> None:
    folder = str(tmp_path / "7")
    publish.write_manifest(folder, {"state": "failed", "error": "x"})
    publish.write_manifest(folder, {"state": "succeeded", "attempt": 2})  # replaces an error
    with pytest.raises(publish.AlreadyPublished):
        publish.write_manifest(folder, {"state": "succeeded", "attempt": 3})
    assert json.loads((tmp_path / "7" / "manifest.json").read_bytes())["attempt"] == 2
    assert os.listdir(folder) == ["manifest.json"]


def test_create_if_absent_refuses_any_existing_name_and_leaves_it_alone(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.symlink_to(tmp_path / "nowhere")  # even a dangling link counts as there
    with pytest.raises(objects.Conflict):
        objects.write(str(target), b"{}", if_absent=True)
    assert target.is_symlink() and not (tmp_path / "nowhere").exists()
    assert os.listdir(tmp_path) == ["manifest.json"]


# ---------------------------------------------------------------------------- the folder


def test_a_planted_symlink_job_folder_is_not_written_through(tmp_path: Path) -> None:
    db, ing, runner = runs.setup(_settings(tmp_path))
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=PNG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    folder = tmp_path / "outbox" / str(jid)
    folder.parent.mkdir()
    folder.symlink_to(elsewhere)
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert (job["state"], job["attempts"]) == ("failed", 1)
    assert job["error"] == (
        f"outputs folder {folder.parent.resolve() / str(jid)} is a symbolic link (to "
        f"{elsewhere}); nothing is written there: move it away, then retry the job"
    )
    assert _files(elsewhere) == {"precious.txt": b"keep me"}
    assert folder.is_symlink()


def test_a_symlink_above_the_job_folder_is_refused_and_nothing_is_made_through_it(
    tmp_path: Path,
) -> None:
    """As ingest's error manifests go under ``<outputs>/rejected/<id>/``."""
    root, elsewhere = tmp_path / "outbox", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "rejected").symlink_to(elsewhere)
    with pytest.raises(UnsafeFolder, match=r"is under .*/outbox/rejected, a symbolic link"):
        objects.ensure_folder(str(root), str(root / "rejected" / "7"))
    assert list(elsewhere.iterdir()) == []


def test_a_file_in_place_of_a_job_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "7").write_bytes(b"not a folder")
    with pytest.raises(UnsafeFolder, match="is a file, not a folder"):
        objects.ensure_folder(str(tmp_path), str(tmp_path / "7"))
    assert (tmp_path / "7").read_bytes() == b"not a folder"


def test_a_folder_outside_the_outputs_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFolder, match="is not inside the outputs root"):
        objects.ensure_folder(str(tmp_path / "outbox"), str(tmp_path / "outbox" / ".." / "x"))


def test_ensure_folder_makes_a_missing_folder_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    assert objects.ensure_folder(str(root), str(root / "rejected" / "3")) is True
    assert (root / "rejected" / "3").is_dir()
    assert objects.ensure_folder(str(root), str(root / "rejected" / "3")) is False


def test_a_folder_holding_another_jobs_results_is_never_overwritten(tmp_path: Path) -> None:
    """The database replaced under the same outputs: ids start again at 1."""
    db, ing, runner = runs.setup(_settings(tmp_path, "first.sqlite3"))
    (first,) = runs.submit(ing, {"task": "mesh", "image": "a.png", "name": "old"}, a__png=PNG)
    runner.run(until_idle=True)
    assert runs.job(db, first)["state"] == "succeeded"
    folder = Path(runs.job(db, first)["outputs_uri"])
    before = _files(folder)
    assert set(before) == {"manifest.json", "mesh.glb", "preview.png"}

    db2, ing2, runner2 = runs.setup(_settings(tmp_path, "second.sqlite3"))
    new = {"task": "mesh", "image": "b.png", "name": "new"}
    (second,) = runs.submit(ing2, new, name="new.json", b__png=disk_png(64))
    assert second == first
    runner2.run(until_idle=True)
    job = runs.job(db2, second)
    assert (job["state"], job["attempts"]) == ("failed", 1)
    source = (tmp_path / "inbox" / "job.json").resolve().as_uri()
    assert job["error"].startswith(
        f"outputs folder {folder} holds the results of another job (job {first}, succeeded,"
        f" source {source}"
    )
    assert job["error"].endswith(
        "the database may have been replaced; move that folder away, then retry the job"
    )
    assert _files(folder) == before


def test_an_earlier_attempts_published_result_is_kept(settings: Settings) -> None:
    """An attempt that published its manifest and died before recording it: the next
    attempt keeps that result rather than writing the folder again."""
    db, ing, runner = runs.setup(settings)
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=PNG)
    runner.run(until_idle=True)
    folder = Path(runs.job(db, jid)["outputs_uri"])
    before = _files(folder)
    with db.write() as conn:  # as if the first attempt's success was never recorded
        conn.execute(text("UPDATE jobs SET state = 'queued', finished_at = NULL"))
    Runner(runner.settings, db).run(until_idle=True)
    job = runs.job(db, jid)
    assert (job["state"], job["attempts"]) == ("succeeded", 2)
    assert _files(folder) == before


def test_a_retried_job_replaces_its_own_error_manifest(settings: Settings) -> None:
    db, ing, runner = runs.setup(settings)
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=PNG)
    picture = settings.inbox_path / "a.png"
    picture.write_bytes(PNG[: len(PNG) // 2])  # truncated after ingest: fails at once
    runner.run(until_idle=True)
    folder = Path(runs.job(db, jid)["outputs_uri"])
    assert json.loads((folder / "manifest.json").read_bytes())["state"] == "failed"
    picture.write_bytes(PNG)
    with db.write() as conn:
        queue.retry(conn, [jid])
    Runner(settings, db).run(until_idle=True)
    assert runs.job(db, jid)["state"] == "succeeded", runs.job(db, jid)["error"]
    assert json.loads((folder / "manifest.json").read_bytes())["state"] == "succeeded"


# ---------------------------------------------------------------------------- leftovers


def _killed_writers_temp(folder: Path, name: str) -> str:
    """The temp file a writer killed with SIGKILL between writing and renaming it leaves."""
    code = (
        "import os, sys; from storage import local; "
        "local._write_temp(sys.argv[1], sys.argv[2], b'half a mesh'); "
        "os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(folder), name], cwd=ROOT)
    assert proc.returncode == -9
    (left,) = [p for p in os.listdir(folder) if p.startswith(f".{name}.")]
    return left


def test_a_retry_after_a_killed_writer_leaves_a_clean_folder(tmp_path: Path) -> None:
    db, ing, runner = runs.setup(_settings(tmp_path))
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=PNG)
    folder = tmp_path / "outbox" / str(jid)
    folder.mkdir(parents=True)
    killed = _killed_writers_temp(folder, "mesh.glb")
    # Temp files of writers on another host sharing the folder: a stale one (untouched
    # for two minutes) goes, a fresh one (that writer may be at work) stays.
    stale, fresh = ".manifest.json.000000-7-0123abcd-4.tmp", ".preview.png.000000-7-0123abcd-5.tmp"
    (folder / stale).write_bytes(b"x")
    (folder / fresh).write_bytes(b"y")
    two_minutes_ago = time.time() - 120
    os.utime(folder / stale, (two_minutes_ago, two_minutes_ago))
    assert killed in os.listdir(folder)
    runner.run(until_idle=True)
    assert runs.job(db, jid)["state"] == "succeeded"
    assert sorted(os.listdir(folder)) == [fresh, "manifest.json", "mesh.glb", "preview.png"]


def test_this_processes_own_temp_files_are_never_removed(tmp_path: Path) -> None:
    mine = local._write_temp(str(tmp_path), "mesh.glb", b"in progress")
    os.utime(mine, (0, 0))  # however old
    assert local.remove_stale_temps(tmp_path) == []
    assert os.path.exists(mine)


# ---------------------------------------------------------------------------- what it holds


def test_inline_pictures_are_noted_in_the_manifest_not_copied(tmp_path: Path) -> None:
    db, ing, runner = runs.setup(_settings(tmp_path))
    inline = "data:image/png;base64," + base64.b64encode(PNG).decode()
    (jid,) = runs.submit(ing, {"task": "mesh", "images": [inline]})
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert job["state"] == "succeeded", job["error"]
    text = (Path(job["outputs_uri"]) / "manifest.json").read_text()
    sha = hashlib.sha256(PNG).hexdigest()
    assert json.loads(text)["inputs"]["images"] == [
        f"(inline image/png, {len(PNG)} bytes, sha256 {sha})"
    ]
    assert inline[30:90] not in text


def _strict(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_manifest_is_strict_json_even_with_nan_in_params_and_info(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    job = {
        "id": 1, "name": None, "source_uri": "file:///j.json", "source_entry": -1,
        "source_sha256": "ab" * 32, "task": "mesh", "params": {"guidance": math.nan},
        "seed": None, "attempts": 1, "inputs": {"prompt": "x"}, "output_format": "glb",
        "created_at": now, "started_at": now,
    }  # fmt: skip
    info = {"loss": math.inf, "score": np.float64("nan"), "spread": [-math.inf, np.float32(2)]}
    doc = publish.manifest(job, state="succeeded", model={"id": "m"}, artifacts=[],
                           timings={"load_s": 0.0}, runner="r", info=info)  # fmt: skip
    publish.write_manifest(str(tmp_path), doc)
    got = _strict((tmp_path / "manifest.json").read_text())
    assert got["params"] == {"guidance": None}
    assert got["info"]["loss"] is None and got["info"]["spread"][0] is None
