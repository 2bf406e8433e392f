"""A runner reads a job's inputs long after ingest checked them: what it reads must be
what was checked, and each input is read once however often it is named."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from config import Settings
from ingest.ingester import Ingester
from tests import runs
from tests.failing_adapters import Recorder
from tests.pictures import disk_png, write_job

PNG = disk_png()


def _noise_png(seed: int, size: int = 160) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _recording(tmp_path: Path, adapter: str = "Recorder", **over: object) -> Settings:
    return runs.only_model(tmp_path, adapter, model={"max_batch": 8}, **over)


def _submit(ing: Ingester, name: str, doc: object, **pictures: bytes) -> list[int]:
    return runs.submit(ing, doc, name=name, **pictures)


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    Recorder.batches.clear()


def test_a_picture_swapped_for_a_link_after_ingest_is_never_used(
    settings: Settings, tmp_path: Path
) -> None:
    db, ing, runner = runs.setup(settings)
    (jid,) = _submit(ing, "a.json", {"task": "mesh", "image": "a.png"}, a__png=PNG)
    (tmp_path / "elsewhere.png").write_bytes(disk_png(background=(0, 0, 255)))
    picture = settings.inbox_path / "a.png"
    picture.unlink()
    os.symlink(tmp_path / "elsewhere.png", picture)
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert job["state"] == "failed" and "a.png" in job["error"]
    assert not (Path(job["outputs_uri"]) / "mesh.glb").exists()


def test_a_picture_rewritten_after_ingest_fails_its_job_with_the_reason(
    settings: Settings,
) -> None:
    db, ing, runner = runs.setup(settings)
    (jid,) = _submit(ing, "a.json", {"task": "mesh", "image": "a.png"}, a__png=PNG)
    (settings.inbox_path / "a.png").write_bytes(disk_png(size=80))
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert job["state"] == "failed" and job["attempts"] == 1  # permanent: no retries
    assert "changed after the job was ingested" in job["error"]


def test_a_folder_swapped_for_a_link_after_ingest_is_never_read(
    settings: Settings, tmp_path: Path
) -> None:
    db, ing, runner = runs.setup(settings)
    sub = settings.inbox_path / "sub"
    (jid,) = _submit(ing, "sub/a.json", {"task": "mesh", "image": "a.png"}) if False else (0,)
    write_job(sub, "a.json", {"task": "mesh", "image": "a.png"}, a__png=PNG)
    (jid,) = [e.id for e in ing.ingest_path(sub / "a.json", move=False, grace=False).jobs]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.png").write_bytes(PNG)  # the very same bytes, outside the job's folder
    (sub / "a.png").unlink()
    sub.rename(tmp_path / "moved-away")
    os.symlink(outside, sub)
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert job["state"] == "failed" and "reached through a symbolic link" in job["error"]


def test_a_mesh_changed_after_ingest_fails_its_job(settings: Settings) -> None:
    db, ing, runner = runs.setup(settings)
    box = trimesh.creation.box()
    (settings.inbox_path).mkdir(parents=True)
    (settings.inbox_path / "m.obj").write_bytes(box.export(file_type="obj").encode())
    (jid,) = _submit(ing, "c.json", {"task": "convert", "mesh": "m.obj", "output_format": "stl"})
    sphere = trimesh.creation.icosphere(subdivisions=1)
    (settings.inbox_path / "m.obj").write_bytes(sphere.export(file_type="obj").encode())
    runner.run(until_idle=True)
    job = runs.job(db, jid)
    assert job["state"] == "failed" and "changed after the job was ingested" in job["error"]


def test_a_picture_named_sixteen_times_by_eight_jobs_is_read_once(tmp_path: Path) -> None:
    settings = _recording(tmp_path)
    db, ing, runner = runs.setup(settings)
    big = _noise_png(1)
    ids = _submit(ing, "many.json", [{"task": "mesh", "images": ["big.png"] * 16}] * 8,
                  big__png=big)  # fmt: skip
    runner.run(until_idle=True)
    assert [runs.job(db, i)["state"] for i in ids] == ["succeeded"] * 8
    (batch,) = Recorder.batches
    pictures = [data for item in batch for data in item.images]
    assert len(pictures) == 8  # the model uses one picture a job: one each, not sixteen
    assert len({id(p) for p in pictures}) == 1 and pictures[0] == big  # one read, shared


def test_a_model_that_uses_every_picture_gets_each_distinct_one_once(tmp_path: Path) -> None:
    settings = _recording(tmp_path, "RecordsEveryPicture")
    db, ing, runner = runs.setup(settings)
    ids = _submit(ing, "a.json", {"task": "mesh", "images": ["a.png", "b.png", "a.png"]},
                  a__png=_noise_png(1), b__png=_noise_png(2))  # fmt: skip
    runner.run(until_idle=True)
    assert runs.job(db, ids[0])["state"] == "succeeded"
    ((item,),) = Recorder.batches
    assert len(item.images) == 3 and item.images[0] is item.images[2]
    assert item.images[0] != item.images[1]


def test_a_batch_past_the_input_budget_runs_in_parts(tmp_path: Path) -> None:
    pictures = {f"p{n}__png": _noise_png(n) for n in range(6)}
    size = max(len(p) for p in pictures.values())
    settings = _recording(tmp_path, runner={"max_batch_input_bytes": int(size * 2.5)})
    db, ing, runner = runs.setup(settings)
    ids = _submit(ing, "a.json", [{"task": "mesh", "image": f"p{n}.png"} for n in range(6)],
                  **pictures)  # fmt: skip
    runner.run(until_idle=True)
    assert [runs.job(db, i)["state"] for i in ids] == ["succeeded"] * 6
    sizes = [len(b) for b in Recorder.batches]
    assert sum(sizes) == 6 and max(sizes) <= 2  # one runner batch, in parts of two
    for part in Recorder.batches:
        assert sum(len(p) for it in part for p in it.images) <= size * 2.5
