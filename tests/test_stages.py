"""Mesh stages end to end (ingest -> runner -> outputs) on the built-in CPU backends:
mesh inputs checked at ingest, each task's artifacts, and chains of stages ('then')."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from config import Settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from ingest.ingester import Ingester
from runner.loop import Runner
from tests import meshes
from tests.pictures import blank_png, disk_png, write_job

PNG = disk_png()


def _setup(settings: Settings) -> tuple[Database, Ingester, Runner]:
    db = Database(create(settings.database_url))
    upgrade(db)
    return db, Ingester(settings, db), Runner(settings, db)


def _submit(ing: Ingester, doc: object, **files: bytes) -> list[queue.Enqueued]:
    path = write_job(ing.settings.inbox_path, "job.json", doc, **files)
    return ing.ingest_path(path, move=False, grace=False).jobs


def _job(db: Database, job_id: int) -> dict[str, Any]:
    with db.read() as conn:
        job = queue.get_job(conn, job_id)
    assert job is not None
    return job


def _manifest(job: dict[str, Any]) -> dict[str, Any]:
    return json.loads((Path(job["outputs_uri"]) / "manifest.json").read_text())


def _glb(mesh: trimesh.Trimesh) -> bytes:
    return bytes(mesh.export(file_type="glb"))


def test_a_chain_from_one_picture_runs_mesh_then_texture_then_rig(settings: Settings) -> None:
    db, ing, runner = _setup(settings)
    made = _submit(
        ing,
        {"task": "mesh", "image": "a.png", "name": "disk", "params": {"resolution": 64},
         "then": [{"task": "texture", "params": {"texture_size": 256}}, {"task": "rig"}]},
        a__png=PNG,
    )  # fmt: skip
    assert [e.state for e in made] == ["queued", "waiting", "waiting"]
    runner.run(until_idle=True)
    mesh_job, texture_job, rig_job = (_job(db, e.id) for e in made)
    assert [j["state"] for j in (mesh_job, texture_job, rig_job)] == ["succeeded"] * 3, [
        j["error"] for j in (mesh_job, texture_job, rig_job)
    ]
    # Each stage took the stage before's mesh, and the texture stage the job's picture.
    assert texture_job["inputs"]["mesh"] == f"{mesh_job['outputs_uri']}/mesh.glb"
    assert texture_job["inputs"]["images"] == mesh_job["inputs"]["images"]
    assert rig_job["inputs"]["mesh"] == f"{texture_job['outputs_uri']}/mesh.glb"
    first = _manifest(mesh_job)
    assert [(s["stage"], s["job_id"], s["task"]) for s in first["chain"]] == [
        (1, mesh_job["id"], "mesh"), (2, texture_job["id"], "texture"), (3, rig_job["id"], "rig"),
    ]  # fmt: skip
    assert first["mesh_artifact"] == "mesh.glb"
    textured = _manifest(texture_job)
    assert {"mesh.glb", "texture.png", "preview.png"} <= {a["name"] for a in textured["artifacts"]}
    rigged = _manifest(rig_job)
    assert rigged["mesh_artifact"] == "rigged.glb"
    assert {a["name"] for a in rigged["artifacts"]} == {"rigged.glb", "preview.png"}
    # The rig keeps the textured mesh's geometry: same faces as the mesh stage made.
    assert rigged["mesh"]["faces"] == first["mesh"]["faces"]


def test_a_chain_whose_first_stage_fails_fails_its_later_stages(settings: Settings) -> None:
    db, ing, runner = _setup(settings)
    made = _submit(
        ing,
        {"task": "mesh", "image": "a.png", "then": [{"task": "texture"}, {"task": "rig"}]},
        a__png=blank_png(transparent=True),
    )
    runner.run(until_idle=True)
    first, *later = (_job(db, e.id) for e in made)
    assert first["state"] == "failed" and "fully transparent" in first["error"]
    for job in later:
        assert job["state"] == "failed"
        assert job["error"] == f"stage 1 (mesh) failed: {first['error']}"
        assert job["attempts"] == 0  # never ran


def test_status_shows_a_chain_as_one_line(sqlite_settings: Settings) -> None:
    from manage import cli

    db, ing, runner = _setup(sqlite_settings)
    made = _submit(
        ing,
        {"task": "mesh", "image": "a.png", "then": [{"task": "segment"}]},
        a__png=PNG,
    )
    env = {
        "GEN3D_DATABASE_URL": sqlite_settings.database_url,
        "GEN3D_INBOX": str(sqlite_settings.inbox_path),
        "GEN3D_OUTPUTS": str(sqlite_settings.outputs_path),
    }
    out = CliRunner().invoke(cli, ["status"], env=env)
    assert out.exit_code == 0, out.output
    (line,) = [ln for ln in out.output.splitlines() if ln.startswith(f"{made[0].id}>")]
    assert f"{made[0].id}>{made[1].id}" in line and "mesh>segment" in line
    assert "queued 1/2" in line
    runner.run(until_idle=True)
    out = CliRunner().invoke(cli, ["status"], env=env)
    (line,) = [ln for ln in out.output.splitlines() if ln.startswith(f"{made[0].id}>")]
    assert "succeeded 2/2" in line and f"/{made[1].id}" in line  # the last stage's outputs


@pytest.mark.parametrize(
    ("doc", "artifacts", "mesh_artifact"),
    [
        ({"task": "segment", "mesh": "table.glb", "params": {"parts": 5}},
         {"parts.glb", "labels.npy", "preview.png"}, "parts.glb"),
        ({"task": "rig", "mesh": "character.glb"}, {"rigged.glb", "preview.png"}, "rigged.glb"),
        ({"task": "convert", "mesh": "character.glb", "output_format": "ply"},
         {"mesh.ply", "preview.png"}, "mesh.ply"),
        ({"task": "texture", "mesh": "character.glb", "image": "a.png",
          "params": {"texture_size": 256}},
         {"mesh.glb", "texture.png", "preview.png"}, "mesh.glb"),
    ],
)  # fmt: skip
def test_each_mesh_task_writes_its_artifacts(
    sqlite_settings: Settings, doc: dict[str, Any], artifacts: set[str], mesh_artifact: str
) -> None:
    db, ing, runner = _setup(sqlite_settings)
    table = meshes.table().subdivide().subdivide()
    (made,) = _submit(ing, doc, table__glb=_glb(table), character__glb=_glb(meshes.character()),
                      a__png=PNG)  # fmt: skip
    runner.run(until_idle=True)
    job = _job(db, made.id)
    assert job["state"] == "succeeded", job["error"]
    manifest = _manifest(job)
    assert {a["name"] for a in manifest["artifacts"]} == artifacts
    assert manifest["mesh_artifact"] == mesh_artifact
    assert manifest["mesh"]["faces"] > 0
    assert all((Path(job["outputs_uri"]) / name).stat().st_size > 0 for name in artifacts)


def test_convert_to_obj_writes_its_material_and_texture(sqlite_settings: Settings) -> None:
    db, ing, runner = _setup(sqlite_settings)
    made = _submit(
        ing,
        {"task": "texture", "mesh": "character.glb", "image": "a.png",
         "params": {"texture_size": 256}, "then": [{"task": "convert", "output_format": "obj"}]},
        character__glb=_glb(meshes.character()), a__png=PNG,
    )  # fmt: skip
    runner.run(until_idle=True)
    job = _job(db, made[1].id)
    assert job["state"] == "succeeded", job["error"]
    folder = Path(job["outputs_uri"])
    names = {a["name"] for a in _manifest(job)["artifacts"]}
    assert {"mesh.obj", "preview.png"} <= names
    assert any(n.endswith(".mtl") for n in names) and any(n.endswith(".png") and n !=
                                                          "preview.png" for n in names)  # fmt: skip
    back = trimesh.load(folder / "mesh.obj", force="mesh")
    assert back.visual.kind == "texture" and back.visual.uv is not None


# ---------------------------------------------------------------------------- ingest checks


def _rejected(settings: Settings, doc: object, **files: bytes) -> str:
    _, ing, _ = _setup(settings)
    (made,) = _submit(ing, doc, **files)
    assert made.state == "rejected"
    with ing.db.read() as conn:
        job = queue.get_job(conn, made.id)
    assert job is not None and job["error"]
    return str(job["error"])


def test_a_mesh_input_that_is_not_a_mesh_is_rejected(sqlite_settings: Settings) -> None:
    error = _rejected(sqlite_settings, {"task": "rig", "mesh": "m.glb"}, m__glb=b"not a glb")
    assert "m.glb" in error


def test_a_mesh_input_outside_the_job_folder_is_rejected(sqlite_settings: Settings) -> None:
    error = _rejected(sqlite_settings, {"task": "rig", "mesh": "../m.glb"})
    assert "outside" in error


def _character_rejected(settings: Settings, **limits: int) -> str:
    """The reason a segment job on the character mesh is rejected under ``limits``."""
    limited = settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})
    return _rejected(limited, {"task": "segment", "mesh": "c.glb"},
                     c__glb=_glb(meshes.character()))  # fmt: skip


def test_a_mesh_over_the_face_limit_is_rejected(sqlite_settings: Settings) -> None:
    error = _character_rejected(sqlite_settings, max_mesh_faces=1000)
    assert "1,000" in error or "1000" in error


def test_a_gltf_that_points_outside_its_folder_is_rejected(sqlite_settings: Settings) -> None:
    mesh = meshes.table()
    gltf = trimesh.exchange.gltf.export_gltf(mesh, merge_buffers=True)
    doc = json.loads(gltf["model.gltf"])
    (name,) = [k for k in gltf if k.endswith(".bin")]
    doc["buffers"][0]["uri"] = "../secret/" + name
    error = _rejected(
        sqlite_settings, {"task": "convert", "mesh": "m.gltf"},
        m__gltf=json.dumps(doc).encode(),
    )  # fmt: skip
    assert "../secret/" in error


def test_a_texture_stage_needs_a_picture(sqlite_settings: Settings) -> None:
    error = _rejected(
        sqlite_settings, {"task": "texture", "mesh": "c.glb"}, c__glb=_glb(meshes.table())
    )
    assert "needs image" in error and "'image'" in error
    error = _rejected(
        sqlite_settings,
        {"task": "convert", "mesh": "c.glb", "then": [{"task": "texture"}]},
        c__glb=_glb(meshes.table()),
    )
    assert error.startswith("then[0]: ") and "needs image" in error


def test_a_stage_is_checked_like_a_job(sqlite_settings: Settings) -> None:
    error = _rejected(
        sqlite_settings,
        {"task": "mesh", "image": "a.png", "then": [{"task": "segment", "params": {"partz": 3}}]},
        a__png=PNG,
    )
    assert error == "then[0]: model 'builtin-parts': unknown parameter 'partz'"
    error = _rejected(
        sqlite_settings,
        {"task": "mesh", "image": "a.png", "then": [{"task": "mesh"}]},
        a__png=PNG,
    )
    assert error == "then[0]: model 'builtin-inflate' does not take a mesh"


def test_a_chain_ingested_twice_is_one_chain(sqlite_settings: Settings) -> None:
    _, ing, _ = _setup(sqlite_settings)
    doc = {"task": "mesh", "image": "a.png", "then": [{"task": "rig"}]}
    first = _submit(ing, doc, a__png=PNG)
    again = _submit(ing, doc, a__png=PNG)
    assert [e.id for e in again] == [e.id for e in first] and not any(e.created for e in again)


def test_labels_of_a_segment_job_cover_every_face(sqlite_settings: Settings) -> None:
    db, ing, runner = _setup(sqlite_settings)
    table = meshes.table().subdivide().subdivide()
    (made,) = _submit(ing, {"task": "segment", "mesh": "t.glb"}, t__glb=_glb(table))
    runner.run(until_idle=True)
    job = _job(db, made.id)
    assert job["state"] == "succeeded", job["error"]
    labels = np.load(Path(job["outputs_uri"]) / "labels.npy")
    assert labels.shape == (len(table.faces),) and labels.min() >= 0


def test_a_mesh_over_the_byte_limit_is_rejected(sqlite_settings: Settings) -> None:
    error = _character_rejected(sqlite_settings, max_mesh_bytes=10_000)
    assert "the limit is 10,000" in error and "c.glb" in error
