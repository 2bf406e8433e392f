"""Job files to rows: every bad input gets a clear reason, a rejected row, an error
manifest, and harms nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config import Settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from ingest.ingester import Ingester, IngestResult, is_job_file
from storage.mesh_export import export_mesh
from tests.meshes import blob, glb_with_texture, textured
from tests.pictures import bomb_png, disk_png, eps, write_job

PNG = disk_png()


def make_ingester(settings: Settings) -> Ingester:
    db = Database(create(settings.database_url))
    upgrade(db)
    return Ingester(settings, db)


@pytest.fixture
def ingester(sqlite_settings: Settings) -> Ingester:
    return make_ingester(sqlite_settings)


def inbox(ing: Ingester) -> Path:
    return ing.settings.inbox_path


def only_job(ing: Ingester, result: IngestResult) -> dict:
    (e,) = result.jobs
    with ing.db.read() as conn:
        job = queue.get_job(conn, e.id)
    assert job is not None
    return job


def rejected_reason(ing: Ingester, path: Path) -> str:
    result = ing.ingest_path(path, move=True, grace=False)
    job = only_job(ing, result)
    assert job["state"] == "rejected"
    manifest = Path(job["outputs_uri"]) / "manifest.json"
    doc = json.loads(manifest.read_text())
    assert doc["state"] == "rejected" and doc["error"] == job["error"]
    assert doc["source"]["uri"] == path.absolute().as_uri()
    assert result.moved_to is not None and result.moved_to.parent.name == ".rejected"
    assert result.moved_to.read_bytes()  # the original bytes are kept
    return job["error"]


def test_good_job_is_queued_with_resolved_inputs_and_filed_under_accepted(
    ingester: Ingester,
) -> None:
    path = write_job(
        inbox(ingester), "a.json", {"task": "mesh", "image": "a.png", "name": "a"}, a__png=PNG
    )
    result = ingester.ingest_path(path, move=True, grace=False)
    job = only_job(ingester, result)
    assert job["state"] == "queued" and job["model"] == "builtin-inflate" and job["name"] == "a"
    assert job["inputs"]["images"] == [(inbox(ingester) / "a.png").resolve().as_uri()]
    assert len(job["inputs"]["image_sha256"][0]) == 64
    assert job["params"]["resolution"] > 0  # the adapter's defaults are recorded
    assert result.moved_to == inbox(ingester) / ".accepted" / "a.json"
    assert not path.exists()


def test_same_file_twice_makes_one_job(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "a.json", {"task": "mesh", "image": "a.png"}, a__png=PNG)
    first = ingester.ingest_path(path, move=False, grace=False)
    second = ingester.ingest_path(path, move=False, grace=False)
    assert first.jobs[0].created and not second.jobs[0].created
    assert first.jobs[0].id == second.jobs[0].id


def test_not_json_is_rejected(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", "{this is not json")
    assert "not JSON" in rejected_reason(ingester, path)


def test_json_of_the_wrong_shape_is_rejected(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", "42")
    assert "must be a JSON object" in rejected_reason(ingester, path)


def test_empty_list_is_rejected(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", "[]")
    assert "empty list" in rejected_reason(ingester, path)


def test_unknown_task_is_rejected(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", {"task": "fly", "image": "a.png"}, a__png=PNG)
    assert "task" in rejected_reason(ingester, path)


def test_unknown_model_is_rejected(ingester: Ingester) -> None:
    path = write_job(
        inbox(ingester), "x.json", {"task": "mesh", "image": "a.png", "model": "nope"}, a__png=PNG
    )
    assert "unknown model 'nope'" in rejected_reason(ingester, path)


def test_unknown_output_format_is_rejected(ingester: Ingester) -> None:
    path = write_job(
        inbox(ingester),
        "x.json",
        {"task": "mesh", "image": "a.png", "output_format": "fbx"},
        a__png=PNG,
    )
    assert "output_format" in rejected_reason(ingester, path)


def test_unknown_field_is_rejected_not_ignored(ingester: Ingester) -> None:
    path = write_job(
        inbox(ingester),
        "x.json",
        {"task": "mesh", "image": "a.png", "outptu_format": "obj"},
        a__png=PNG,
    )
    assert "unknown field 'outptu_format'" in rejected_reason(ingester, path)


def test_unknown_param_is_rejected(ingester: Ingester) -> None:
    path = write_job(
        inbox(ingester),
        "x.json",
        {"task": "mesh", "image": "a.png", "params": {"stepz": 3}},
        a__png=PNG,
    )
    assert "unknown parameter 'stepz'" in rejected_reason(ingester, path)


def test_task_without_a_default_model_is_rejected(ingester: Ingester) -> None:
    del ingester.registry.defaults["rig"]  # a deployment that serves no rigging by default
    path = write_job(inbox(ingester), "x.json", {"task": "rig", "mesh": "m.glb"})
    assert "no default model for task 'rig'" in rejected_reason(ingester, path)


def test_prompt_only_job_for_a_picture_model_is_rejected(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "prompt": "a red chair"})
    assert "needs a picture" in rejected_reason(ingester, path)


def test_missing_picture_is_rejected(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "image": "nowhere.png"})
    assert "not found" in rejected_reason(ingester, path)


def test_missing_picture_waits_for_the_grace_period_first(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "image": "late.png"})
    assert ingester.ingest_path(path, move=True, grace=True).status == "deferred"
    assert path.exists()
    (inbox(ingester) / "late.png").write_bytes(PNG)
    assert (
        only_job(ingester, ingester.ingest_path(path, move=True, grace=True))["state"] == "queued"
    )


def test_picture_that_is_a_directory_is_rejected(ingester: Ingester) -> None:
    (inbox(ingester) / "dir.png").mkdir(parents=True)
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "image": "dir.png"})
    assert "is a directory" in rejected_reason(ingester, path)


@pytest.mark.parametrize("ref", ["../outside.png", "sub/../../outside.png"])
def test_picture_outside_the_job_folder_is_rejected(ingester: Ingester, ref: str) -> None:
    (inbox(ingester).parent / "outside.png").parent.mkdir(parents=True, exist_ok=True)
    (inbox(ingester).parent / "outside.png").write_bytes(PNG)
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "image": ref})
    assert "outside the job file's folder" in rejected_reason(ingester, path)


def test_absolute_picture_path_is_rejected(ingester: Ingester, tmp_path: Path) -> None:
    (tmp_path / "abs.png").write_bytes(PNG)
    path = write_job(
        inbox(ingester), "x.json", {"task": "mesh", "image": str(tmp_path / "abs.png")}
    )
    assert "absolute" in rejected_reason(ingester, path)


def test_symlink_leading_out_of_the_job_folder_is_rejected(
    ingester: Ingester, tmp_path: Path
) -> None:
    (tmp_path / "secret.png").write_bytes(PNG)
    inbox(ingester).mkdir(parents=True)
    os.symlink(tmp_path / "secret.png", inbox(ingester) / "link.png")
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "image": "link.png"})
    assert "outside the job file's folder" in rejected_reason(ingester, path)


def test_not_a_picture_is_rejected(ingester: Ingester) -> None:
    path = write_job(
        inbox(ingester), "x.json", {"task": "mesh", "image": "a.png"}, a__png=b"hello, not a png"
    )
    assert "not a picture" in rejected_reason(ingester, path)


def test_postscript_named_png_is_rejected_as_not_a_raster_format(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "image": "x.png"}, x__png=eps())
    assert rejected_reason(ingester, path) == (
        "image 'x.png' is EPS, not one of the raster formats PNG, JPEG, MPO, WEBP, BMP, TIFF,"
        " GIF, TGA"
    )


def test_zero_byte_picture_is_rejected(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "image": "a.png"}, a__png=b"")
    assert "empty (0 bytes)" in rejected_reason(ingester, path)


def test_decompression_bomb_is_rejected_before_decoding(ingester: Ingester) -> None:
    path = write_job(
        inbox(ingester), "x.json", {"task": "mesh", "image": "a.png"}, a__png=bomb_png()
    )
    reason = rejected_reason(ingester, path)
    assert "too large to decode safely" in reason and "400000000 pixels" in reason


def test_glb_whose_texture_is_a_decompression_bomb_is_rejected(ingester: Ingester) -> None:
    doc = {"task": "convert", "mesh": "m.glb"}
    glb = glb_with_texture(bomb_png(30000, 30000))
    reason = rejected_reason(ingester, write_job(inbox(ingester), "x.json", doc, m__glb=glb))
    assert reason.startswith("image 0 of m.glb (in its bufferView ")
    assert reason.endswith(
        ") is too large to decode safely: Image size (900000000 pixels); the limit is"
        " 40,000,000 pixels"
    )


def test_glb_whose_texture_is_truncated_is_rejected(ingester: Ingester) -> None:
    doc = {"task": "convert", "mesh": "m.glb"}
    glb = glb_with_texture(PNG[: len(PNG) // 2])
    reason = rejected_reason(ingester, write_job(inbox(ingester), "x.json", doc, m__glb=glb))
    assert reason.startswith("image 0 of m.glb (in its bufferView ")
    assert reason.endswith(") is damaged or truncated: image file is truncated")


def test_mesh_texture_is_held_to_the_configured_picture_pixel_limit(
    sqlite_settings: Settings,
) -> None:
    limits = sqlite_settings.limits.model_copy(update={"max_picture_pixels": 9000})
    ingester = make_ingester(sqlite_settings.model_copy(update={"limits": limits}))
    doc = {"task": "convert", "mesh": "m.glb"}
    glb = export_mesh(textured(blob(1), size=96), "glb")["mesh.glb"]
    reason = rejected_reason(ingester, write_job(inbox(ingester), "x.json", doc, m__glb=glb))
    assert reason.endswith(
        ") is 96 x 96 = 9,216 pixels; the limit is 9,000 pixels and 16384 per side"
    )


def test_data_uri_picture_is_accepted(ingester: Ingester) -> None:
    import base64

    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    path = write_job(inbox(ingester), "x.json", {"task": "mesh", "image": uri})
    assert (
        only_job(ingester, ingester.ingest_path(path, move=True, grace=False))["state"] == "queued"
    )


def test_bad_entry_in_a_list_leaves_the_good_ones_queued(ingester: Ingester) -> None:
    doc = [
        {"task": "mesh", "image": "a.png", "name": "good0"},
        {"task": "mesh", "image": "a.png", "output_format": "fbx", "name": "bad"},
        {"task": "mesh", "image": "a.png", "name": "good2"},
    ]
    path = write_job(inbox(ingester), "list.json", doc, a__png=PNG)
    result = ingester.ingest_path(path, move=True, grace=False)
    assert [(e.source_entry, e.state) for e in result.jobs] == [
        (0, "queued"),
        (1, "rejected"),
        (2, "queued"),
    ]
    (bad_id,) = result.errors
    assert result.errors[bad_id].startswith("entry 1: ")


def test_jsonl_with_a_broken_line_keeps_the_other_lines(ingester: Ingester) -> None:
    text = (
        json.dumps({"task": "mesh", "image": "a.png"})
        + "\n{oops\n"
        + json.dumps({"task": "mesh", "image": "a.png"})
        + "\n"
    )
    path = write_job(inbox(ingester), "jobs.jsonl", text, a__png=PNG)
    result = ingester.ingest_path(path, move=False, grace=False)
    assert [e.state for e in result.jobs] == ["queued", "rejected", "queued"]
    assert "line 2" in next(iter(result.errors.values()))


def test_scan_skips_dot_folders_temp_names_and_pictures(ingester: Ingester) -> None:
    good = write_job(inbox(ingester), "a.json", {"task": "mesh", "image": "a.png"}, a__png=PNG)
    write_job(inbox(ingester) / ".accepted", "old.json", {"task": "mesh", "image": "x.png"})
    write_job(inbox(ingester), "b.json.part", {"task": "mesh", "image": "a.png"})
    write_job(inbox(ingester), ".hidden.json", {"task": "mesh", "image": "a.png"})
    results = ingester.scan(grace=False)
    assert [r.path for r in results] == [good.absolute()]


def test_scan_with_a_settle_time_leaves_files_still_being_written(ingester: Ingester) -> None:
    fresh = inbox(ingester) / "fresh.json"
    inbox(ingester).mkdir(parents=True)
    fresh.write_text("")  # created, not yet written: what a scan can see mid-write
    assert ingester.scan(grace=True, settle_s=60) == []
    assert fresh.exists()
    old = write_job(inbox(ingester), "old.json", {"task": "mesh", "image": "a.png"}, a__png=PNG)
    os.utime(old, (old.stat().st_mtime - 120,) * 2)
    assert [r.path for r in ingester.scan(grace=True, settle_s=60)] == [old.absolute()]


def test_scan_descends_into_subfolders(ingester: Ingester) -> None:
    sub = write_job(
        inbox(ingester) / "batch1", "a.json", {"task": "mesh", "image": "a.png"}, a__png=PNG
    )
    (result,) = ingester.scan(grace=False)
    assert result.path == sub.absolute()
    assert result.moved_to == inbox(ingester) / ".accepted" / "batch1" / "a.json"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.json", True),
        ("a.JSONL", True),
        ("a.png", False),
        (".a.json", False),
        ("a.json.tmp", False),
        ("a.json~", False),
    ],
)
def test_which_names_are_job_files(name: str, expected: bool) -> None:
    assert is_job_file(Path(name)) is expected


def test_ingest_is_idempotent_on_both_databases(settings: Settings) -> None:
    db = Database(create(settings.database_url))
    ing = Ingester(settings, db)
    path = write_job(
        settings.inbox_path, "a.json", [{"task": "mesh", "image": "a.png"}] * 2, a__png=PNG
    )
    ids = [e.id for e in ing.ingest_path(path, move=False, grace=False).jobs]
    again = ing.ingest_path(path, move=False, grace=False).jobs
    assert [e.id for e in again] == ids and not any(e.created for e in again)
    with db.read() as conn:
        assert queue.count_by_state(conn) == {"queued": 2}
    db.dispose()


def test_max_attempts_comes_from_the_job_then_the_model_then_the_settings(
    ingester: Ingester,
) -> None:
    path = write_job(
        inbox(ingester), "a.json",
        [{"task": "mesh", "image": "a.png"}, {"task": "mesh", "image": "a.png", "max_attempts": 7}],
        a__png=PNG,
    )  # fmt: skip
    result = ingester.ingest_path(path, move=False, grace=False)
    with ingester.db.read() as conn:
        attempts = [queue.get_job(conn, e.id)["max_attempts"] for e in result.jobs]  # type: ignore[index]
    assert attempts == [ingester.settings.runner.max_attempts, 7]


def test_a_picture_still_being_written_is_waited_for(ingester: Ingester) -> None:
    """Its sha256 becomes the job's: the hash of a half-written file would fail the job
    at run time, once the writer has finished."""
    import hashlib

    half = PNG[: len(PNG) // 2]
    path = write_job(inbox(ingester), "a.json", {"task": "mesh", "image": "a.png"}, a__png=half)
    assert ingester.ingest_path(path, move=True, grace=True).status == "deferred"
    (inbox(ingester) / "a.png").write_bytes(PNG)
    job = only_job(ingester, ingester.ingest_path(path, move=True, grace=True))
    assert job["state"] == "queued"
    assert job["inputs"]["image_sha256"] == [hashlib.sha256(PNG).hexdigest()]
