"""builtin-convert: a mesh through every format, and decimated to a face budget."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import trimesh
from pydantic import ValidationError

from adapters.base import InputError, Item, Result
from adapters.builtin.convert import ConvertAdapter
from adapters.builtin.convert.pipeline import ConvertParams, convert
from geometry.measures import is_closed
from storage.mesh_export import export_mesh
from storage.meshes import load_mesh
from tests.meshes import blob, character, surface_colour, textured
from tests.pictures import MAX_PIXELS

LIMIT = 1_000_000
LIMITS = {"max_faces": LIMIT, "max_pixels": MAX_PIXELS}


def run(mesh: Any, **params: Any) -> Result:
    adapter = ConvertAdapter("builtin-convert")
    adapter.load("cpu")
    (result,) = adapter.run_batch([Item(job_id=1, task="convert", params=params, mesh=mesh)])
    assert isinstance(result, Result), result
    return result


def through(mesh: Any, fmt: str) -> trimesh.Trimesh:
    """Write ``mesh`` as the runner does and read the files back as the next stage would."""
    files = export_mesh(mesh, fmt)
    return load_mesh(files[f"mesh.{fmt}"], f"mesh.{fmt}", **LIMITS, resolve=files.get)


def distance_to(surface: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    import igl

    d2, _, _ = igl.point_mesh_squared_distance(
        np.asarray(points, dtype=float),
        np.asarray(surface.vertices, dtype=float),
        np.asarray(surface.faces, dtype=np.int64),
    )
    return np.sqrt(d2)


def colour_error_at_face_centres(mesh: trimesh.Trimesh) -> np.ndarray:
    """How far the texture under each face's centre is from the colour painted there."""
    uv = mesh.visual.uv[mesh.faces].mean(axis=1)
    shown = trimesh.visual.uv_to_color(uv, mesh.visual.material.image)[:, :3].astype(int)
    return np.abs(shown - surface_colour(mesh.triangles_center)).max(axis=1)


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["glb", "obj", "ply", "stl"])
def test_every_format_round_trip_keeps_counts(fmt: str) -> None:
    source = through(character(), "glb")  # as the runner hands it over: loaded and checked
    result = run(source)
    back = through(result.mesh, fmt)
    assert len(back.faces) == len(source.faces)
    if fmt == "stl":  # no shared vertices in STL: three per face
        assert len(back.vertices) == 3 * len(source.faces)
    else:
        assert len(back.vertices) == len(source.vertices)
    assert np.allclose(back.bounds, source.bounds, atol=1e-6)
    assert result.info["before"] == result.info["after"]


def test_textured_obj_export_has_mtl_and_png_and_reimports_with_texture() -> None:
    source = textured(character(), size=128)
    result = run(source)
    files = export_mesh(result.mesh, "obj")
    assert set(files) == {"mesh.obj", "mesh.mtl", "mesh_texture.png"}
    assert files["mesh_texture.png"].startswith(b"\x89PNG")
    back = load_mesh(files["mesh.obj"], "mesh.obj", **LIMITS, resolve=files.__getitem__)
    assert back.visual.kind == "texture"
    assert back.visual.material.image.size == (128, 128)
    assert np.allclose(back.visual.uv, source.visual.uv, atol=1e-6)
    assert np.median(colour_error_at_face_centres(back)) <= 3


def test_weld_turns_an_stl_soup_back_into_a_closed_mesh() -> None:
    mesh = blob(3)
    soup = through(mesh, "stl")
    assert len(soup.vertices) == 3 * len(mesh.faces) and not soup.is_watertight
    result = run(soup, weld=True)
    assert len(result.mesh.vertices) == len(mesh.vertices)
    assert len(result.mesh.faces) == len(mesh.faces)
    assert result.mesh.is_watertight
    assert result.info["after"]["vertices"] == len(mesh.vertices)


# ---------------------------------------------------------------------------- face limit


def test_face_limit_decimates_close_to_the_limit_keeping_the_silhouette() -> None:
    mesh = blob(5)  # 20,480 faces
    result = run(mesh, face_limit=2000)
    out = result.mesh
    assert 1900 <= len(out.faces) <= 2000
    size = float(np.max(mesh.extents))
    assert np.abs(out.bounds - mesh.bounds).max() <= 0.02 * size
    # Hausdorff, both ways (vertices of each against the other's surface).
    assert distance_to(mesh, out.vertices).max() <= 0.02 * size
    assert distance_to(out, mesh.vertices).max() <= 0.02 * size
    assert out.is_watertight
    assert result.info["after"]["faces"] == len(out.faces)
    assert result.info["before"]["faces"] == len(mesh.faces)


def test_face_limit_where_the_fast_decimator_stalls_keeps_thin_parts() -> None:
    mesh = character()  # thin limbs: fast_simplification stops near 760 faces
    result = run(mesh, face_limit=300)
    out = result.mesh
    assert len(out.faces) <= 300
    assert result.info["decimation"]["method"] == "qslim"
    assert np.abs(out.bounds - mesh.bounds).max() <= 0.02
    assert is_closed(out.faces)


def test_decimated_texture_stays_right_across_uv_seams() -> None:
    mesh = textured(character(), size=256)
    result = run(mesh, face_limit=1000)
    out = result.mesh
    assert len(out.faces) <= 1000
    assert out.visual.kind == "texture"
    assert out.visual.material.image is mesh.visual.material.image
    assert result.info["decimation"]["seam_vertices"] > 0
    # A face spanning two UV islands would sample the atlas between them: far off colours.
    err = colour_error_at_face_centres(out)
    assert np.median(err) <= 4 and np.percentile(err, 99) <= 40
    assert (err > 80).mean() < 0.005


def test_decimation_carries_vertex_colours() -> None:
    mesh = blob(4)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=surface_colour(mesh.vertices))
    out = run(mesh, face_limit=500).mesh
    assert out.visual.kind == "vertex"
    err = np.abs(out.visual.vertex_colors[:, :3].astype(int) - surface_colour(out.vertices))
    assert np.percentile(err, 95) <= 12


def test_face_limit_already_met_leaves_the_mesh_alone() -> None:
    mesh = blob(2)
    result = run(mesh, face_limit=10_000)
    assert result.mesh is mesh
    assert result.info["decimation"]["skipped"] == "already within"


def test_unreachable_face_limit_is_an_input_error() -> None:
    two_boxes = trimesh.util.concatenate(
        [trimesh.creation.box(), trimesh.creation.box().apply_translation([3, 0, 0])]
    )
    with pytest.raises(InputError, match="cannot decimate to 4 faces without tearing"):
        convert(two_boxes, ConvertParams(face_limit=4))
    adapter = ConvertAdapter("builtin-convert")
    (failure,) = adapter.run_batch(
        [Item(job_id=1, task="convert", params={"face_limit": 4}, mesh=two_boxes)]
    )
    assert isinstance(failure, InputError)


def test_non_manifold_mesh_the_fast_simplifier_cannot_reduce_is_an_input_error() -> None:
    # A fan of 12 triangles on one edge: no collapse keeps it, and qslim refuses it.
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    tips = np.column_stack([np.cos(angles), np.sin(angles), np.full(12, 0.5)])
    fan = trimesh.Trimesh(
        np.vstack([[0, 0, 0], [0, 0, 1], tips]),
        [[0, 1, 2 + k] for k in range(12)],
        process=False,
    )
    with pytest.raises(InputError, match="qslim needs an edge-manifold one"):
        convert(fan, ConvertParams(face_limit=4))


def test_info_reports_before_after_and_step_seconds() -> None:
    info = run(blob(4), face_limit=1000).info
    for side in ("before", "after"):
        assert set(info[side]) == {"vertices", "faces", "watertight", "bbox"}
    assert info["before"]["faces"] == 5120 and info["after"]["faces"] <= 1000
    assert set(info["seconds"]) == {"weld_positions", "decimate", "transfer", "total"}
    assert info["decimation"]["visual"] == "none"


@pytest.mark.parametrize(
    "params", [{"face_limit": 3}, {"face_limit": "many"}, {"facelimit": 100}, {"weld": "x"}]
)
def test_bad_params_are_rejected(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConvertParams.model_validate(params)


def test_missing_mesh_is_an_input_error() -> None:
    (failure,) = ConvertAdapter("builtin-convert").run_batch(
        [Item(job_id=1, task="convert", params={})]
    )
    assert isinstance(failure, InputError)
