"""The runner end to end on the built-in backend: outputs, manifests, failures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import trimesh

from config import Settings
from db import queue
from tests import runs
from tests.pictures import blank_png, disk_png

PNG = disk_png()


def test_a_job_produces_mesh_preview_and_a_manifest_written_last(settings: Settings) -> None:
    db, ing, runner = runs.setup(settings)
    (jid,) = runs.submit(
        ing, {"task": "mesh", "image": "a.png", "name": "disk", "seed": 7}, a__png=PNG
    )
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert job["state"] == "succeeded" and job["attempts"] == 1
    folder = Path(job["outputs_uri"])
    assert folder == settings.outputs_path.resolve() / str(jid)
    manifest = json.loads((folder / "manifest.json").read_text())
    names = [a["name"] for a in manifest["artifacts"]]
    assert names == ["mesh.glb", "preview.png"]
    for a in manifest["artifacts"]:
        data = (folder / a["name"]).read_bytes()
        assert a["bytes"] == len(data) and a["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["job_id"] == jid and manifest["seed"] == 7 and manifest["attempt"] == 1
    assert manifest["model"]["id"] == "builtin-inflate" and manifest["model"]["version"]
    assert manifest["mesh"]["watertight"] is True and manifest["mesh"]["faces"] > 100
    assert set(manifest["timings"]) >= {
        "queued_at",
        "started_at",
        "finished_at",
        "load_s",
        "inference_s",
    }
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left
    mesh = trimesh.load(folder / "mesh.glb", force="mesh")
    assert len(mesh.faces) == manifest["mesh"]["faces"]


@pytest.mark.parametrize("fmt", ["obj", "ply", "stl"])
def test_output_format_is_honoured(sqlite_settings: Settings, fmt: str) -> None:
    db, ing, runner = runs.setup(sqlite_settings)
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png", "output_format": fmt}, a__png=PNG)
    runner.run(until_idle=True)
    folder = Path(runs.job(db, jid)["outputs_uri"])
    mesh = trimesh.load(folder / f"mesh.{fmt}", force="mesh")
    assert len(mesh.faces) == json.loads((folder / "manifest.json").read_text())["mesh"]["faces"]


def test_truncated_picture_fails_at_once_without_retries(sqlite_settings: Settings) -> None:
    db, ing, runner = runs.setup(sqlite_settings)
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=PNG[: len(PNG) // 2])
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert job["state"] == "failed" and job["attempts"] == 1
    assert "truncated" in job["error"]
    manifest = json.loads((Path(job["outputs_uri"]) / "manifest.json").read_text())
    assert manifest["state"] == "failed" and manifest["error"] == job["error"]


@pytest.mark.parametrize(
    ("picture", "reason"),
    [(blank_png(transparent=True), "transparent"), (blank_png(transparent=False), "foreground")],
)
def test_picture_without_foreground_fails_with_the_reason(
    sqlite_settings: Settings, picture: bytes, reason: str
) -> None:
    db, ing, runner = runs.setup(sqlite_settings)
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=picture)
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert job["state"] == "failed" and job["attempts"] == 1 and reason in job["error"]


def test_one_bad_job_does_not_stop_the_batch_or_the_runner(sqlite_settings: Settings) -> None:
    db, ing, runner = runs.setup(sqlite_settings)
    doc = [
        {"task": "mesh", "image": "a.png"},
        {"task": "mesh", "image": "blank.png"},
        {"task": "mesh", "image": "a.png"},
    ]
    ids = runs.submit(ing, doc, a__png=PNG, blank__png=blank_png(transparent=True))
    stats = runner.run(until_idle=True)
    assert [runs.job(db, i)["state"] for i in ids] == ["succeeded", "failed", "succeeded"]
    assert stats.batches == 1  # one model, one batch


def test_environment_errors_are_retried_with_back_off_then_fail(tmp_path: Path) -> None:
    settings = runs.only_model(
        tmp_path,
        "EnvironmentFailure",
        runner={"max_attempts": 2, "retry_base_s": 0.05, "poll_interval_s": 0.02},
    )
    db, ing, runner = runs.setup(settings)
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=PNG)
    stats = runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert (job["state"], job["attempts"], stats.retried) == ("failed", 2, 1)
    assert "No space left on device" in job["error"]
    with db.read() as conn:
        evs = queue.events(conn, jid)
    assert [e["to_state"] for e in evs] == ["queued", "running", "queued", "running", "failed"]
    assert "Traceback" in (evs[2]["detail"] or "")  # the traceback is kept for the admin


def test_missing_weights_fail_with_the_install_hint(tmp_path: Path) -> None:
    settings = runs.only_model(tmp_path, "MissingWeights")
    db, ing, runner = runs.setup(settings)
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=PNG)
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert (
        job["state"] == "failed"
        and job["attempts"] == 1
        and "put them in /models/x" in job["error"]
    )


def test_max_jobs_stops_after_that_many(sqlite_settings: Settings) -> None:
    db, ing, runner = runs.setup(sqlite_settings)
    ids = runs.submit(ing, [{"task": "mesh", "image": "a.png"}] * 3, a__png=PNG)
    stats = runner.run(max_jobs=2)
    assert stats.claimed == 2
    assert sorted(runs.job(db, i)["state"] for i in ids) == ["queued", "succeeded", "succeeded"]


def test_higher_priority_runs_first(sqlite_settings: Settings) -> None:
    db, ing, runner = runs.setup(sqlite_settings)
    ids = runs.submit(
        ing, [{"task": "mesh", "image": "a.png", "priority": p} for p in (0, 5, 1)], a__png=PNG
    )
    runner.run(max_jobs=1)
    assert [runs.job(db, i)["state"] for i in ids] == ["queued", "succeeded", "queued"]


def test_id_ranges_reads_like_a_person_would_write_it() -> None:
    from runner.outcomes import _id_ranges

    assert _id_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert _id_ranges([5]) == "5"
    assert _id_ranges([]) == ""


def test_jobs_of_a_model_not_in_the_registry_fail_without_blocking_others(
    sqlite_settings: Settings,
) -> None:
    """A row naming a model this runner's registry lacks (removed from the config since
    it was ingested) fails with the reason, and the queue behind it still runs."""
    db, ing, runner = runs.setup(sqlite_settings)
    with db.write() as conn:
        (gone,) = queue.enqueue_file(
            conn,
            [
                queue.NewJob(
                    task="mesh",
                    model="retired-model",
                    source_uri="file:///x.json",
                    source_sha256="ab" * 32,
                    inputs={"prompt": "a cat"},
                )
            ],  # fmt: skip
            runner.outputs_root,
        )
    (jid,) = runs.submit(ing, {"task": "mesh", "image": "a.png"}, a__png=PNG)
    runner.run(until_idle=True)
    failed = runs.job(db, gone.id)
    assert failed["state"] == "failed"
    assert failed["error"] == "model 'retired-model' is not in the registry"
    assert runs.job(db, jid)["state"] == "succeeded"
