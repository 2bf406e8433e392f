"""builtin-rig: the joint tree, the skin weights as stored in the GLB, and the failures.

Everything about the skin is read back from the written ``rigged.glb`` with a small
reader of its own (not the writer's code), as a viewer would see it.
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from typing import Any

import numpy as np
import pytest
import trimesh
from PIL import Image
from pydantic import ValidationError

from adapters.base import InputError, Item, Result
from adapters.builtin.rig import RigAdapter
from adapters.builtin.rig.pipeline import RigParams, rig
from geometry.camera import MARGIN, camera
from geometry.split import cut_long_edges as split_long_edges
from tests import gltf_validator
from tests.meshes import blob, character
from tests.pictures import MAX_PIXELS

# --------------------------------------------------------------------- GLB reading

DTYPES = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


class Glb:
    """The JSON and binary chunk of a GLB, with accessors read as numpy arrays."""

    def __init__(self, data: bytes) -> None:
        magic, version, total = struct.unpack_from("<III", data, 0)
        assert (magic, version, total) == (0x46546C67, 2, len(data))
        json_len, _ = struct.unpack_from("<II", data, 12)
        self.doc: dict[str, Any] = json.loads(data[20 : 20 + json_len])
        bin_len, kind = struct.unpack_from("<II", data, 20 + json_len)
        assert kind == 0x004E4942
        self.bin = data[28 + json_len : 28 + json_len + bin_len]

    def accessor(self, index: int) -> np.ndarray:
        acc = self.doc["accessors"][index]
        view = self.doc["bufferViews"][acc["bufferView"]]
        width = WIDTH[acc["type"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        dtype = DTYPES[acc["componentType"]]
        out = np.frombuffer(self.bin, dtype, acc["count"] * width, start)
        out = out.reshape(acc["count"], width) if width > 1 else out
        if acc.get("normalized"):
            out = out / np.iinfo(dtype).max
        return out

    def attribute(self, name: str) -> np.ndarray:
        return self.accessor(self.doc["meshes"][0]["primitives"][0]["attributes"][name])

    def joint_parents(self) -> dict[int, int]:
        return {c: n for n, node in enumerate(self.doc["nodes"]) for c in node.get("children", [])}

    def global_matrices(self) -> np.ndarray:
        """(J, 4, 4) world transform of each skin joint, composed down the node tree."""
        nodes, parents = self.doc["nodes"], self.joint_parents()

        def local(n: int) -> np.ndarray:
            m = np.eye(4)
            node = nodes[n]
            if "matrix" in node:
                return np.asarray(node["matrix"], float).reshape(4, 4).T
            m[:3, 3] = node.get("translation", [0, 0, 0])
            assert "rotation" not in node and "scale" not in node
            return m

        def world(n: int) -> np.ndarray:
            return world(parents[n]) @ local(n) if n in parents else local(n)

        return np.stack([world(j) for j in self.doc["skins"][0]["joints"]])


# --------------------------------------------------------------------- fixtures


@cache
def _rigged() -> tuple[trimesh.Trimesh, Result]:
    """The test character through the adapter, once per module (tests only read it)."""
    mesh = character()
    out = RigAdapter("builtin-rig").run_batch([Item(job_id=1, task="rig", params={}, mesh=mesh)])
    assert isinstance(out[0], Result), out[0]
    return mesh, out[0]


@cache
def _glb() -> Glb:
    return Glb(_rigged()[1].artifacts[0].data)


def _ancestors(parents: dict[int, int], node: int) -> list[int]:
    path = [node]
    while path[-1] in parents:
        path.append(parents[path[-1]])
    return path


def _limb(glb: Glb, point: np.ndarray) -> tuple[int, list[int]]:
    """(leaf nearest ``point``, joints from it up to, not including, the branch point)."""
    joints = glb.doc["skins"][0]["joints"]
    nodes, parents = glb.doc["nodes"], glb.joint_parents()
    positions = glb.global_matrices()[:, :3, 3]
    leaves = [i for i, j in enumerate(joints) if not nodes[j].get("children")]
    leaf = min(leaves, key=lambda i: float(np.linalg.norm(positions[i] - point)))
    chain = []
    for node in _ancestors(parents, joints[leaf]):
        if len(nodes[node].get("children", [])) > 1:
            break
        chain.append(joints.index(node))
    return leaf, chain


def _extremities(mesh: trimesh.Trimesh) -> dict[str, np.ndarray]:
    v = np.asarray(mesh.vertices)
    left, right = v[v[:, 0] > 0], v[v[:, 0] < 0]
    return {
        "left hand": v[np.argmax(v[:, 0])],
        "right hand": v[np.argmin(v[:, 0])],
        "head": v[np.argmax(v[:, 1])],
        "left foot": left[np.argmin(left[:, 1])],
        "right foot": right[np.argmin(right[:, 1])],
    }


# --------------------------------------------------------------------- skeleton


def test_skeleton_has_a_chain_from_the_root_to_each_hand_foot_and_the_head() -> None:
    mesh, _ = _rigged()
    glb = _glb()
    skin = glb.doc["skins"][0]
    joints, parents = skin["joints"], glb.joint_parents()
    assert len(joints) >= 10
    positions = glb.global_matrices()[:, :3, 3]
    size = float(mesh.extents.max())
    ends = {}
    for name, point in _extremities(mesh).items():
        leaf, chain = _limb(glb, point)
        gap = float(np.linalg.norm(positions[leaf] - point))
        assert gap < 0.06 * size, f"no joint reaches the {name}: nearest leaf {gap:.3f} away"
        assert len(chain) >= 3, f"the {name} chain has only {len(chain)} joints"
        assert _ancestors(parents, joints[leaf])[-1] == skin["skeleton"]
        ends[name] = leaf
    assert len(set(ends.values())) == 5, "two extremities share one leaf"


def test_root_is_at_the_centre_of_mass_and_joints_lie_inside_the_mesh() -> None:
    import igl

    mesh, _ = _rigged()
    positions = _glb().global_matrices()[:, :3, 3]
    root = _glb().doc["skins"][0]["skeleton"]
    assert np.linalg.norm(positions[root] - mesh.center_mass) < 0.02
    winding = igl.fast_winding_number(
        np.asarray(mesh.vertices, float), np.asarray(mesh.faces, np.int64), positions
    )
    assert (winding > 0.5).all(), f"joints outside: {np.flatnonzero(winding <= 0.5)}"


def test_inverse_bind_matrices_are_the_inverses_of_the_joints_bind_transforms() -> None:
    glb = _glb()
    ibm = glb.accessor(glb.doc["skins"][0]["inverseBindMatrices"])
    ibm = ibm.reshape(-1, 4, 4).transpose(0, 2, 1)  # stored column-major
    world = glb.global_matrices()
    assert len(ibm) == len(world)
    assert np.allclose(ibm @ world, np.eye(4), atol=1e-5)


def test_chain_names_and_info_describe_the_skeleton() -> None:
    _, result = _rigged()
    info = result.info
    names = [n["name"] for n in _glb().doc["nodes"][: info["joints"]]]
    limbs = {"up", "left", "right", "down.L", "down.R"}
    assert set(info["chains"]) == limbs | {"trunk_up", "trunk_down"}
    assert all(j in names for chain in info["chains"].values() for j in chain)
    assert info["max_influences"] <= 4
    assert {"skeleton", "weights", "total"} <= set(info["seconds"])
    json.dumps(info)  # goes into manifest.json as it is


# --------------------------------------------------------------------- weights


def test_stored_weights_sum_to_one_with_at_most_four_influences_and_bind_every_vertex() -> None:
    mesh, _ = _rigged()
    glb = _glb()
    weights = glb.attribute("WEIGHTS_0")
    joints = glb.attribute("JOINTS_0")
    assert weights.shape == joints.shape == (len(mesh.vertices), 4)
    assert np.abs(weights.sum(axis=1, dtype=np.float32) - 1.0).max() < 1e-3
    assert (weights >= 0).all() and (weights.max(axis=1) > 0).all()
    assert (joints < len(glb.doc["skins"][0]["joints"])).all()
    for row_j, row_w in zip(joints, weights, strict=True):  # a joint appears once per vertex
        used = row_j[row_w > 0]
        assert len(set(used.tolist())) == len(used)


def test_hand_vertices_follow_their_arm_and_feet_their_leg() -> None:
    mesh, _ = _rigged()
    glb = _glb()
    v = np.asarray(mesh.vertices)
    weights, joints = glb.attribute("WEIGHTS_0"), glb.attribute("JOINTS_0")
    ends = _extremities(mesh)
    limbs = {name: set(_limb(glb, point)[1]) for name, point in ends.items()}
    parts = {
        "left hand": v[:, 0] > 0.4,
        "right hand": v[:, 0] < -0.4,
        "left foot": (v[:, 1] < -0.42) & (v[:, 0] > 0),
        "right foot": (v[:, 1] < -0.42) & (v[:, 0] < 0),
    }
    for name, sel in parts.items():
        assert sel.sum() > 20
        own = np.isin(joints[sel], list(limbs[name]))
        on_limb = (weights[sel] * own).sum(axis=1)
        assert on_limb.min() > 0.9, f"{name}: only {on_limb.min():.2f} on its own limb"
        others = set().union(*(limbs[n] for n in limbs if n != name))
        elsewhere = (weights[sel] * np.isin(joints[sel], list(others))).sum(axis=1)
        assert elsewhere.max() == 0.0, f"{name} is pulled by another limb"


def test_fewer_influences_when_asked() -> None:
    mesh = character()
    skin, info = rig(np.asarray(mesh.vertices), np.asarray(mesh.faces), RigParams(max_influences=2))
    assert ((skin.weights > 0).sum(axis=1) <= 2).all() and info["max_influences"] <= 2
    assert np.abs(skin.weights.sum(axis=1) - 1.0).max() < 1e-6


def test_shorter_bones_give_more_joints() -> None:
    mesh = character()
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    short = rig(v, f, RigParams(bone_length=0.05))[1]["joints"]
    long = rig(v, f, RigParams(bone_length=0.15))[1]["joints"]
    assert short > long + 10


def test_small_separate_piece_moves_rigidly_with_the_nearest_limb() -> None:
    body = character()
    hand = _extremities(body)["left hand"]
    ring = trimesh.creation.icosphere(2, radius=0.015).apply_translation(hand + [0.03, 0, 0])
    mesh = trimesh.util.concatenate([body, ring])
    skin, info = rig(np.asarray(mesh.vertices), np.asarray(mesh.faces), RigParams())
    piece = slice(len(body.vertices), None)
    assert info["bodies"] == 2
    assert (skin.joint_index[piece] == skin.joint_index[piece][0]).all()
    assert (skin.weights[piece] == skin.weights[piece][0]).all()
    first = len(body.vertices)
    held = skin.joint_index[first][skin.weights[first] > 0]
    names = {skin.skeleton.names[j] for j in held}
    assert names and all(n.startswith("left_") for n in names), names


# --------------------------------------------------------------------- the GLB


def test_rigged_glb_passes_the_khronos_validator() -> None:
    report = gltf_validator.validate_glb(_rigged()[1].artifacts[0].data)
    issues = report["issues"]
    assert issues["numErrors"] == 0, gltf_validator.errors(report)
    assert report["info"]["hasSkins"] and report["info"]["maxInfluences"] == 4


def test_trimesh_and_the_mesh_loader_read_the_rigged_glb_with_geometry_intact() -> None:
    from storage.meshes import load_mesh

    mesh, result = _rigged()
    data = result.artifacts[0].data
    loaded = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh", process=False)
    assert loaded.vertices.shape == mesh.vertices.shape and loaded.faces.shape == mesh.faces.shape
    assert np.allclose(loaded.vertices, mesh.vertices, atol=1e-6)
    assert (loaded.faces == mesh.faces).all()
    again = load_mesh(  # a chained stage's input
        data, "rigged.glb", max_faces=1_000_000, max_pixels=MAX_PIXELS
    )
    assert len(again.faces) == len(mesh.faces)


def test_textures_and_vertex_colours_are_carried_into_the_glb() -> None:
    mesh = blob(2)
    v = np.asarray(mesh.vertices)
    uv = np.column_stack([np.arctan2(v[:, 2], v[:, 0]) / (2 * np.pi) + 0.5, v[:, 1] + 0.5])
    picture = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (32, 1)))
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=picture.convert("RGB"))
    textured = trimesh.Trimesh(v, mesh.faces, process=False)
    textured.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    coloured = trimesh.Trimesh(v, mesh.faces, vertex_colors=[200, 40, 40, 255], process=False)
    out = RigAdapter("builtin-rig").run_batch(
        [Item(job_id=n, task="rig", params={}, mesh=m) for n, m in enumerate([textured, coloured])]
    )
    assert all(isinstance(r, Result) for r in out), out
    for r in out:
        report = gltf_validator.validate_glb(r.artifacts[0].data)
        assert report["issues"]["numErrors"] == 0, gltf_validator.errors(report)
    back = trimesh.load(io.BytesIO(out[0].artifacts[0].data), file_type="glb", force="mesh")
    assert back.visual.kind == "texture"
    assert np.allclose(back.visual.uv, uv, atol=1e-6)
    assert back.visual.material.baseColorTexture.size == picture.size
    glb = Glb(out[1].artifacts[0].data)
    assert (glb.attribute("COLOR_0")[:, :3] * 255 == [200, 40, 40]).all()
    for r in out:  # the colour factor multiplies in: white leaves picture and colours be
        pbr = Glb(r.artifacts[0].data).doc["materials"][0]["pbrMetallicRoughness"]
        assert pbr["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0]


# --------------------------------------------------------------------- the adapter


def test_result_names_the_glb_as_the_mesh_and_previews_the_bones() -> None:
    mesh, result = _rigged()
    assert result.mesh is mesh and result.mesh_artifact == "rigged.glb"
    assert [a.name for a in result.artifacts] == ["rigged.glb"]
    rgb = result.preview_rgb
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    # Every joint is drawn as a white dot where render() puts that point of the mesh.
    rot = camera("three_quarter")
    v = np.asarray(mesh.vertices) @ rot.T
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    scale, centre = MARGIN * 512 / (hi - lo).max(), (lo + hi) / 2
    j = _glb().global_matrices()[:, :3, 3] @ rot.T
    cols = ((j[:, 0] - centre[0]) * scale + 256).astype(int)
    rows = (256 - (j[:, 1] - centre[1]) * scale).astype(int)
    assert (rgb[rows, cols].min(axis=1) > 220).all()


def test_several_bodies_of_comparable_size_are_refused() -> None:
    one = character()
    two = trimesh.util.concatenate([one, one.copy().apply_translation([1.5, 0, 0])])
    (out,) = RigAdapter("builtin-rig").run_batch([Item(job_id=1, task="rig", params={}, mesh=two)])
    assert isinstance(out, InputError) and "2 separate bodies" in str(out)


def test_missing_or_degenerate_meshes_are_refused() -> None:
    tri = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    line = [[x, 0.0, 0.0] for x in range(10)]  # ten points on a line: no area anywhere
    flat = trimesh.Trimesh(line, [[i, i + 1, i + 2] for i in range(8)], process=False)
    out = RigAdapter("builtin-rig").run_batch(
        [
            Item(job_id=1, task="rig", params={}),
            Item(job_id=2, task="rig", params={}, mesh=tri),
            Item(job_id=3, task="rig", params={}, mesh=flat),
        ]
    )
    assert isinstance(out[0], InputError) and "needs a mesh" in str(out[0])
    assert isinstance(out[1], InputError) and "too few" in str(out[1])
    assert isinstance(out[2], InputError) and "no surface area" in str(out[2])


def test_unknown_or_out_of_range_params_are_errors() -> None:
    with pytest.raises(ValidationError):
        RigParams.model_validate({"bones": 10})
    with pytest.raises(ValidationError):
        RigParams.model_validate({"max_influences": 5})
    (out,) = RigAdapter("builtin-rig").run_batch(
        [Item(job_id=1, task="rig", params={"bone_length": 0}, mesh=character())]
    )
    assert isinstance(out, ValidationError)


# --------------------------------------------------------------------- proxy surface


def test_splitting_long_edges_keeps_the_surface_and_its_points() -> None:
    mesh = character()
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    limit = 0.02
    pv, pf = split_long_edges(v, f, limit)
    out = trimesh.Trimesh(pv, pf, process=False)
    assert np.array_equal(pv[: len(v)], v)
    assert out.is_watertight and out.is_winding_consistent
    assert out.area == pytest.approx(mesh.area, rel=1e-9)
    assert out.volume == pytest.approx(mesh.volume, rel=1e-9)
    assert out.edges_unique_length.max() <= limit + 1e-12
    assert len(pf) < 12 * len(f)  # slivers become ladders, not fans of ever thinner ones


def test_vertices_split_at_a_seam_are_rigged_as_one_body_with_equal_weights() -> None:
    """UV seams duplicate vertices; the two halves of the figure must not be two bodies."""
    mesh = character()
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    right = v[f].mean(axis=1)[:, 0] > 0  # faces of the figure's left half get own copies
    copy = np.unique(f[right])
    remap = np.arange(len(v))
    remap[copy] = len(v) + np.arange(len(copy))
    seamed = trimesh.Trimesh(
        np.vstack([v, v[copy]]), np.where(right[:, None], remap[f], f), process=False
    )
    assert len(trimesh.graph.connected_components(seamed.face_adjacency)) == 2
    skin, info = rig(np.asarray(seamed.vertices), np.asarray(seamed.faces), RigParams())
    assert info["bodies"] == 1 and info["joints"] >= 10
    dense = np.zeros((len(seamed.vertices), info["joints"]))
    rows = np.repeat(np.arange(len(dense)), 4)
    np.add.at(dense, (rows, skin.joint_index.reshape(-1)), skin.weights.reshape(-1))
    assert np.allclose(dense[copy], dense[len(v) :])
