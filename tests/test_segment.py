"""builtin-parts: parts follow concave creases (a table's top and legs, a figure's limbs),
the outputs are machine-readable and complete, runs repeat, bad requests say why."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
import trimesh
from pydantic import ValidationError

from adapters.base import InputError, Item, Result
from adapters.builtin.parts import PartsAdapter
from adapters.builtin.parts.pipeline import PartsParams, segment
from tests import meshes


@cache
def _table(dense: bool) -> trimesh.Trimesh:
    """The raw table (76 faces, slivers spanning the top) or one remeshed as a user's
    mesh would be: no edge over 3 % of its size."""
    mesh = meshes.table()
    if not dense:
        return mesh
    v, f = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=0.03)
    return trimesh.Trimesh(v, f)


@cache
def _figure(name: str) -> trimesh.Trimesh:
    return meshes.character() if name == "character" else meshes.smooth_figure()


@cache
def _labels(name: str, parts: int | None = None) -> np.ndarray:
    mesh = _figure(name) if "table" not in name else _table(name == "dense table")
    labels, _ = segment(mesh.vertices, mesh.faces, PartsParams(parts=parts))
    return labels


def _run(mesh: trimesh.Trimesh, **params: object) -> Result:
    (out,) = PartsAdapter("builtin-parts").run_batch(
        [Item(job_id=1, task="segment", params=dict(params), mesh=mesh)]
    )
    assert isinstance(out, Result), out
    return out


def _majority(labels: np.ndarray, areas: np.ndarray, where: np.ndarray) -> tuple[int, float]:
    """(the label covering most of the area where ``where``, its share of that area)."""
    assert where.any(), "the region must hold faces"
    weight = np.bincount(labels[where], weights=areas[where])
    return int(weight.argmax()), float(weight.max() / weight.sum())


# ------------------------------------------------------------------ parts follow creases


@pytest.mark.parametrize("name", ["raw table", "dense table"])
def test_a_table_in_five_parts_is_its_top_and_each_leg(name: str) -> None:
    mesh = _table(name == "dense table")
    labels = _labels(name, 5)
    c, areas = mesh.triangles_center, mesh.area_faces
    assert labels.max() + 1 >= 5
    top_y = mesh.bounds[1, 1]
    top, top_share = _majority(labels, areas, c[:, 1] > top_y - 0.01)
    assert top_share == 1.0
    below = c[:, 1] < top_y - 0.1  # under the top's underside (the top is 0.067 thick)
    legs = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            leg, share = _majority(labels, areas, below & (sx * c[:, 0] > 0) & (sz * c[:, 2] > 0))
            assert share >= 0.9 and leg != top, (sx, sz, share)
            legs.append(leg)
    assert len(set(legs)) == 4


@pytest.mark.parametrize("name", ["character", "smooth figure"])
def test_a_figure_splits_into_torso_head_and_limbs_by_itself(name: str) -> None:
    """Sharp creases (a boolean union) or none (limbs blended in smoothly): either way
    the limbs, the head and the torso come apart without being told how many."""
    mesh = _figure(name)
    labels = _labels(name)
    c, areas = mesh.triangles_center, mesh.area_faces
    (x0, y0, _), (x1, y1, _) = mesh.bounds
    assert labels.max() + 1 >= 6
    torso_y = y0 + 0.62 * (y1 - y0)  # halfway up the torso
    ends = {
        "left hand": c[:, 0] > x1 - 0.03,
        "right hand": c[:, 0] < x0 + 0.03,
        "left foot": (c[:, 1] < y0 + 0.03) & (c[:, 0] > 0),
        "right foot": (c[:, 1] < y0 + 0.03) & (c[:, 0] < 0),
        "head top": c[:, 1] > y1 - 0.03,
        "torso": (np.abs(c[:, 0]) < 0.05) & (np.abs(c[:, 1] - torso_y) < 0.05),
    }
    found = {}
    for where, region in ends.items():
        found[where], share = _majority(labels, areas, region)
        assert share == 1.0, where
    assert len(set(found.values())) == 6, found
    arms = np.abs(c[:, 0]) > 0.2  # beyond the shoulders
    assert np.mean(labels[arms] != found["torso"]) >= 0.95


# ------------------------------------------------------------------ outputs


def test_labels_and_parts_glb_describe_the_same_split() -> None:
    mesh = meshes.character()
    out = _run(mesh)
    files = {a.name: a.data for a in out.artifacts}
    assert out.mesh_artifact == "parts.glb" and set(files) == {"parts.glb", "labels.npy"}
    labels = np.load(io.BytesIO(files["labels.npy"]), allow_pickle=False)
    assert labels.dtype.kind == "i" and labels.shape == (len(mesh.faces),)
    assert labels.min() == 0 and len(np.unique(labels)) == labels.max() + 1
    scene = trimesh.load(io.BytesIO(files["parts.glb"]), file_type="glb")
    assert isinstance(scene, trimesh.Scene)
    counts = np.bincount(labels)
    assert out.info["parts"] == len(counts) == len(scene.geometry)
    assert out.info["part_faces"] == counts.tolist()
    faces = {name: len(g.faces) for name, g in scene.geometry.items()}
    assert faces == {f"part_{i}": int(n) for i, n in enumerate(counts)}
    assert sum(faces.values()) == len(mesh.faces)
    assert out.info["seconds"]["total"] > 0


def test_parts_keep_the_inputs_texture_but_the_preview_mesh_is_plain() -> None:
    out = _run(meshes.textured(meshes.character(), size=64))
    files = {a.name: a.data for a in out.artifacts}
    scene = trimesh.load(io.BytesIO(files["parts.glb"]), file_type="glb")
    assert {g.visual.kind for g in scene.geometry.values()} == {"texture"}
    assert len(out.mesh.geometry) == len(scene.geometry)
    assert {g.visual.kind for g in out.mesh.geometry.values()} == {None}  # one colour each


def test_separate_shells_are_separate_parts() -> None:
    a = trimesh.creation.box(extents=(0.3, 0.3, 0.3)).apply_translation((-0.35, 0, 0))
    b = trimesh.creation.icosphere(subdivisions=3, radius=0.15).apply_translation((0.35, 0, 0))
    mesh = trimesh.util.concatenate([a, b])
    labels, info = segment(mesh.vertices, mesh.faces, PartsParams())
    assert info["parts"] == 2
    assert len(set(labels[: len(a.faces)])) == 1 and len(set(labels[len(a.faces) :])) == 1
    assert labels[0] != labels[-1]


def test_a_triangle_soup_splits_like_the_welded_mesh() -> None:
    """STL files repeat every corner: faces must still be joined into one surface."""
    mesh = meshes.character()
    soup = trimesh.Trimesh(
        mesh.triangles.reshape(-1, 3), np.arange(3 * len(mesh.faces)).reshape(-1, 3), process=False
    )
    labels, _ = segment(soup.vertices, soup.faces, PartsParams())
    np.testing.assert_array_equal(labels, _labels("character"))


# ------------------------------------------------------------------ repeatability, errors


def test_the_same_mesh_gives_the_same_parts() -> None:
    mesh = _table(True)
    again, _ = segment(mesh.vertices.copy(), mesh.faces.copy(), PartsParams())
    first, _ = segment(mesh.vertices, mesh.faces, PartsParams())
    np.testing.assert_array_equal(first, again)


def test_more_parts_than_faces_is_refused_with_the_reason() -> None:
    tetra = trimesh.creation.icosahedron()
    tetra = trimesh.Trimesh(tetra.vertices[:4], [[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    (out,) = PartsAdapter("builtin-parts").run_batch(
        [Item(job_id=1, task="segment", params={"parts": 5}, mesh=tetra)]
    )
    assert isinstance(out, InputError)
    assert "4 faces" in str(out) and "5 parts" in str(out)


@pytest.mark.parametrize("params", [{"parts": 1}, {"parts": 33}, {"part": 3}])
def test_params_out_of_range_or_unknown_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PartsParams.model_validate(params)


def test_a_job_without_a_mesh_is_refused() -> None:
    (out,) = PartsAdapter("builtin-parts").run_batch([Item(job_id=1, task="segment", params={})])
    assert isinstance(out, InputError) and "mesh" in str(out)
