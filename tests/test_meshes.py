"""storage.meshes: reading user meshes safely and writing them with their textures."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trimesh
from PIL import Image

from storage.errors import InputError
from storage.mesh_export import export_mesh
from storage.meshes import MESH_SUFFIXES, load_mesh
from storage.textures import gltf_images
from tests.meshes import (
    blob,
    glb_of,
    glb_parts,
    glb_with_texture,
    gltf_with_texture_uri,
    surface_colour,
    textured,
    textured_quad,
)
from tests.pictures import MAX_PIXELS, bomb_png, disk_png, eps

LIMIT = 1_000_000
LIMITS = {"max_faces": LIMIT, "max_pixels": MAX_PIXELS}
PNG = disk_png(32)
NOT_RASTER = "not one of the raster formats PNG, JPEG, MPO, WEBP, BMP, TIFF, GIF, TGA"
IN_GLB = r"^image 0 of m\.glb \(in its bufferView \d+\)"  # the number is trimesh's layout
TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\n"
PLY_HEAD = (
    "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    "property float z\nelement face {faces}\nproperty list uchar int vertex_indices\n"
    "end_header\n0 0 0\n1 0 0\n{third}\n"
)


def folder(files: dict[str, bytes]) -> Callable[[str], bytes]:
    """A resolve over in-memory files that records what was asked for."""

    def resolve(name: str) -> bytes:
        resolve.asked.append(name)  # type: ignore[attr-defined]
        if name not in files:
            raise InputError(f"{name} not found beside the mesh")
        return files[name]

    resolve.asked = []  # type: ignore[attr-defined]
    return resolve


def never(name: str) -> bytes:
    raise AssertionError(f"resolve must not be called for an unsafe reference ({name!r})")


def ply(third: str = "0 1 0", faces: str = "3 0 1 2\n", count: int = 1) -> bytes:
    return (PLY_HEAD.format(faces=count, third=third) + faces).encode()


def gltf_with_buffer_uri(uri: str) -> bytes:
    files = trimesh.exchange.gltf.export_gltf(trimesh.Scene(blob(1)))
    doc = json.loads(files["model.gltf"])
    doc["buffers"][0]["uri"] = uri
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["glb", "obj", "ply", "stl"])
def test_each_format_round_trips_geometry(fmt: str) -> None:
    mesh = blob(2)
    files = export_mesh(mesh, fmt)
    assert list(files) == [f"mesh.{fmt}"]
    back = load_mesh(files[f"mesh.{fmt}"], f"mesh.{fmt}", **LIMITS)
    assert isinstance(back, trimesh.Trimesh)
    assert len(back.faces) == len(mesh.faces)
    if fmt == "stl":  # STL stores each triangle's corners apart
        assert len(back.vertices) == 3 * len(mesh.faces)
        assert np.allclose(back.triangles, mesh.triangles, atol=1e-6)
    else:
        assert len(back.vertices) == len(mesh.vertices)
        assert np.allclose(back.vertices, mesh.vertices, atol=1e-6)
        assert (back.faces == mesh.faces).all()


def test_loading_keeps_duplicate_vertices_and_degenerate_faces() -> None:
    text = TRIANGLE + "v 0 0 0\nf 1 2 3\nf 4 2 3\nf 1 1 2\n"
    mesh = load_mesh(text.encode(), "dupes.obj", **LIMITS)
    assert (len(mesh.vertices), len(mesh.faces)) == (4, 3)


def test_gltf_with_external_buffers_loads_through_resolve() -> None:
    mesh = blob(2)
    files = trimesh.exchange.gltf.export_gltf(trimesh.Scene(mesh))
    resolve = folder(files)
    back = load_mesh(files["model.gltf"], "model.gltf", **LIMITS, resolve=resolve)
    assert sorted(resolve.asked) == sorted(k for k in files if k.endswith(".bin"))
    assert (len(back.vertices), len(back.faces)) == (len(mesh.vertices), len(mesh.faces))
    assert np.allclose(back.vertices, mesh.vertices, atol=1e-6)


def test_gltf_with_embedded_data_uris_needs_no_resolve() -> None:
    mesh = blob(1)
    files = trimesh.exchange.gltf.export_gltf(trimesh.Scene(mesh), embed_buffers=True)
    assert "data:" in files["model.gltf"].decode()
    back = load_mesh(files["model.gltf"], "model.gltf", **LIMITS, resolve=never)
    assert len(back.faces) == len(mesh.faces)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("../secret.bin", "outside the mesh's folder"),
        ("sub/../../secret.bin", "outside the mesh's folder"),
        ("%2e%2e/secret.bin", "outside the mesh's folder"),
        ("/etc/passwd", "absolute path"),
        ("C:\\secret.bin", "absolute path"),
        ("file:///x", "file: URI"),
        ("http://x", "http: URI"),
        ("s3://bucket/x.bin", "s3: URI"),
    ],
)
def test_gltf_unsafe_buffer_reference_is_rejected_before_resolve(uri: str, reason: str) -> None:
    with pytest.raises(InputError) as err:
        load_mesh(gltf_with_buffer_uri(uri), "model.gltf", **LIMITS, resolve=never)
    assert repr(uri) in str(err.value) and reason in str(err.value)
    assert str(err.value).startswith("model.gltf refers to")


def test_gltf_reference_without_resolve_is_refused() -> None:
    with pytest.raises(InputError, match="refers to 'buf.bin', but no files beside"):
        load_mesh(gltf_with_buffer_uri("buf.bin"), "model.gltf", **LIMITS)


def test_missing_buffer_is_reported_from_resolve() -> None:
    with pytest.raises(InputError, match="buf.bin not found"):
        load_mesh(gltf_with_buffer_uri("buf.bin"), "model.gltf", **LIMITS, resolve=folder({}))


def test_textured_obj_round_trip_keeps_uv_and_texture() -> None:
    mesh = textured(blob(2), size=64)
    files = export_mesh(mesh, "obj")
    assert set(files) == {"mesh.obj", "mesh.mtl", "mesh_texture.png"}
    assert "mtllib mesh.mtl" in files["mesh.obj"].decode()
    assert "map_Kd mesh_texture.png" in files["mesh.mtl"].decode()
    resolve = folder(files)
    back = load_mesh(files["mesh.obj"], "mesh.obj", **LIMITS, resolve=resolve)
    assert sorted(resolve.asked) == ["mesh.mtl", "mesh_texture.png"]
    assert (len(back.vertices), len(back.faces)) == (len(mesh.vertices), len(mesh.faces))
    assert back.visual.kind == "texture"
    assert np.allclose(back.visual.uv, mesh.visual.uv, atol=1e-6)
    image = np.asarray(back.visual.material.image.convert("RGB"))
    assert (image == np.asarray(mesh.visual.material.image.convert("RGB"))).all()


def test_textured_ply_and_glb_carry_their_texture() -> None:
    mesh = textured(blob(1), size=32)
    for fmt in ("ply", "glb"):
        files = export_mesh(mesh, fmt, stem="shape")
        back = load_mesh(files[f"shape.{fmt}"], f"shape.{fmt}", **LIMITS,
                         resolve=folder(files))  # fmt: skip
        assert set(files) == ({"shape.ply", "shape_texture.png"} if fmt == "ply" else {"shape.glb"})
        assert np.allclose(back.visual.uv, mesh.visual.uv, atol=1e-6)
        colours = back.visual.to_color().vertex_colors[:, :3]
        assert (colours == mesh.visual.to_color().vertex_colors[:, :3]).all()


def test_vertex_colours_survive_glb_ply_and_obj() -> None:
    mesh = blob(2)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=surface_colour(mesh.vertices))
    for fmt in ("glb", "ply", "obj"):
        files = export_mesh(mesh, fmt)
        back = load_mesh(files[f"mesh.{fmt}"], f"mesh.{fmt}", **LIMITS)
        got = back.visual.vertex_colors[:, :3].astype(int)
        assert np.abs(got - surface_colour(mesh.vertices)).max() <= 1, fmt


def test_scene_is_flattened_with_node_transforms_and_instances() -> None:
    part = blob(1)
    scene = trimesh.Scene()
    scene.add_geometry(part, node_name="a", geom_name="part")
    scene.graph.update(frame_to="b", geometry="part", matrix=np.diag([2.0, 2.0, 2.0, 1.0]))
    scene.graph.update(
        frame_to="c", geometry="part", matrix=trimesh.transformations.translation_matrix([5, 0, 0])
    )
    data = export_mesh(scene, "glb")["mesh.glb"]
    mesh = load_mesh(data, "scene.glb", **LIMITS)
    assert len(mesh.faces) == 3 * len(part.faces)
    assert np.allclose(mesh.bounds, [[-1.0, -1.0, -1.0], [5.5, 1.0, 1.0]], atol=0.02)
    with pytest.raises(InputError, match=f"has {3 * len(part.faces):,} faces; the limit is"):
        load_mesh(data, "scene.glb", max_faces=2 * len(part.faces), max_pixels=MAX_PIXELS)


def test_obj_texture_reference_outside_the_folder_is_rejected() -> None:
    mtl = b"newmtl skin\nmap_Kd ../../textures/skin.png\n"
    obj = ("mtllib skin.mtl\n" + TRIANGLE + "vt 0 0\nusemtl skin\nf 1/1 2/1 3/1\n").encode()
    with pytest.raises(InputError, match=r"'\.\./\.\./textures/skin\.png', which is outside"):
        load_mesh(obj, "a.obj", **LIMITS, resolve=folder({"skin.mtl": mtl}))


def test_glb_texture_is_held_to_the_given_pixel_limit() -> None:
    data = export_mesh(textured(blob(1), size=32), "glb")["mesh.glb"]
    assert load_mesh(data, "mesh.glb", **LIMITS).visual.material.baseColorTexture
    with pytest.raises(
        InputError,
        match=r"^image 0 of mesh.glb \(in its bufferView \d+\) is 32 x 32 = 1,024 pixels; the"
        " limit is 1,000 pixels",
    ):
        load_mesh(data, "mesh.glb", max_faces=LIMIT, max_pixels=1000)


def test_obj_texture_that_is_a_decompression_bomb_is_rejected() -> None:
    mtl = b"newmtl skin\nmap_Kd skin.png\n"
    obj = ("mtllib skin.mtl\n" + TRIANGLE + "vt 0 0\nusemtl skin\nf 1/1 2/1 3/1\n").encode()
    files = {"skin.mtl": mtl, "skin.png": bomb_png()}
    with pytest.raises(InputError, match="skin.png .*too large|skin.png .*pixels"):
        load_mesh(obj, "a.obj", **LIMITS, resolve=folder(files))


# ---------------------------------------------------------------------------- textures
# trimesh decodes textures itself and drops one that fails, silently: each of these must
# be refused, with the image named, before trimesh sees its bytes.


def test_textured_glb_loads_with_its_texture() -> None:
    back = load_mesh(glb_with_texture(PNG), "m.glb", **LIMITS)
    texture = back.visual.material.baseColorTexture
    assert texture.size == (32, 32) and texture.format == "PNG"


def test_glb_texture_that_is_a_decompression_bomb_is_rejected_naming_the_image() -> None:
    reason = r" is too large to decode safely: Image size \(900000000 pixels\); the limit is"
    with pytest.raises(InputError, match=IN_GLB + reason + " 40,000,000 pixels$"):
        load_mesh(glb_with_texture(bomb_png(30000, 30000)), "m.glb", **LIMITS)


def test_glb_texture_cut_short_in_its_header_is_rejected_not_dropped() -> None:
    with pytest.raises(InputError, match=IN_GLB + " starts like a PNG file, but its header is"):
        load_mesh(glb_with_texture(PNG[:30]), "m.glb", **LIMITS)


def test_glb_texture_with_truncated_pixels_is_rejected_naming_the_image() -> None:
    with pytest.raises(InputError, match=IN_GLB + " is damaged or truncated: image file is"):
        load_mesh(glb_with_texture(PNG[: len(PNG) // 2]), "m.glb", **LIMITS)


def test_glb_texture_that_is_postscript_is_refused_before_ghostscript() -> None:
    with pytest.raises(InputError, match=f"{IN_GLB} is EPS, {NOT_RASTER}$"):
        load_mesh(glb_with_texture(eps()), "m.glb", **LIMITS)


def test_gltf_data_uri_texture_that_is_a_decompression_bomb_is_rejected() -> None:
    uri = "data:image/png;base64," + base64.b64encode(bomb_png(30000, 30000)).decode()
    files = gltf_with_texture_uri(uri)
    with pytest.raises(InputError, match=r"^image 0 of quad.gltf \(a data: URI\) is too large"):
        load_mesh(files["quad.gltf"], "quad.gltf", **LIMITS, resolve=files.get)


def test_gltf_texture_file_is_checked_for_what_it_holds_not_its_name() -> None:
    files = {**gltf_with_texture_uri("tex.png"), "tex.png": eps()}
    with pytest.raises(InputError) as err:
        load_mesh(files["quad.gltf"], "quad.gltf", **LIMITS, resolve=files.get)
    assert str(err.value) == f"image 0 of quad.gltf ('tex.png') is EPS, {NOT_RASTER}"


def test_obj_texture_is_checked_whatever_its_suffix() -> None:
    mtl = b"newmtl skin\nmap_Kd skin.dat\n"
    obj = ("mtllib skin.mtl\n" + TRIANGLE + "vt 0 0\nusemtl skin\nf 1/1 2/1 3/1\n").encode()
    files = {"skin.mtl": mtl, "skin.dat": eps()}
    with pytest.raises(InputError) as err:
        load_mesh(obj, "a.obj", **LIMITS, resolve=folder(files))
    assert str(err.value) == f"skin.dat (a texture of a.obj) is EPS, {NOT_RASTER}"


def _odd_glb(layout: str) -> bytes:
    """The textured quad's GLB laid out in a way the glTF spec allows or trimesh tolerates."""
    doc, binary = glb_parts(bytes(textured_quad().export(file_type="glb")))
    inline = "data:image/png;base64," + base64.b64encode(PNG).decode()
    if layout == "an unknown chunk before BIN":
        return glb_of(doc, (b"XTRA", b"junk"), (b"BIN\0", binary))
    if layout == "a second BIN chunk":
        doc["bufferViews"].append({"buffer": 1, "byteLength": len(PNG)})
        doc["images"].append({"bufferView": len(doc["bufferViews"]) - 1})
        return glb_of(doc, (b"BIN\0", binary), (b"BIN\0", PNG))
    if layout == "a bufferView and a uri":
        doc["images"][0]["uri"] = inline
    if layout == "base64 in the middle of a uri":
        doc["images"][0] = {"uri": "tex.png#" + inline.split(";", 1)[1]}
    return glb_of(doc, (b"BIN\0", binary))


@pytest.mark.parametrize(
    "layout",
    [
        "an unknown chunk before BIN",
        "a second BIN chunk",
        "a bufferView and a uri",
        "base64 in the middle of a uri",
    ],
)
def test_glb_images_are_checked_as_the_bytes_trimesh_decodes(
    layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    glb, opened = _odd_glb(layout), []
    pillow_open = Image.open

    def spy(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
        opened.append(fp.getvalue())
        return pillow_open(io.BytesIO(opened[-1]), *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    trimesh.load_scene(io.BytesIO(glb), file_type="glb", process=False)
    assert opened == [data for _, data in gltf_images(glb, "glb", "m.glb", never)]


# ---------------------------------------------------------------------------- malformed


@pytest.mark.parametrize("name", ["model.fbx", "model", "notes.txt", "model.obj.zip"])
def test_unknown_suffix_is_not_a_mesh(name: str) -> None:
    with pytest.raises(InputError, match=r"is not a mesh: expected one of \.glb, \.gltf"):
        load_mesh(b"whatever", name, **LIMITS)
    assert ".stl" in MESH_SUFFIXES


@pytest.mark.parametrize(
    ("suffix", "reason"),
    [
        (".glb", "is not a readable GLB file"),
        (".gltf", "is not a readable GLTF file: not JSON"),
        (".obj", "holds no geometry"),
        (".ply", "is not a readable PLY file"),
        (".stl", "is not a readable STL file"),
    ],
)
def test_garbage_bytes_are_rejected(suffix: str, reason: str) -> None:
    with pytest.raises(InputError, match=f"^junk{suffix} {reason}"):
        load_mesh(b"\x00\x17 this is not a mesh \xff" * 8, f"junk{suffix}", **LIMITS)


def test_empty_file_is_rejected() -> None:
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        load_mesh(b"", "empty.glb", **LIMITS)


@pytest.mark.parametrize(
    ("data", "name"),
    [(TRIANGLE.encode(), "points.obj"), (ply(faces="", count=0), "points.ply")],
)
def test_point_cloud_has_no_triangles(data: bytes, name: str) -> None:
    with pytest.raises(InputError, match="no triangles, only PointCloud"):
        load_mesh(data, name, **LIMITS)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ((TRIANGLE + "f 1 2 7\n").encode(), "a.obj"),
        ((TRIANGLE + "f 1 2 0\n").encode(), "a.obj"),
        ((TRIANGLE + "f 1 2 -4\n").encode(), "a.obj"),
        ((TRIANGLE + "vt 0 0\nf 1/1 2/1 3/2\n").encode(), "a.obj"),
        ((TRIANGLE + "vn 0 0 1\nf 1//1 2//1 3//2\n").encode(), "a.obj"),
        ((TRIANGLE + "vt 0 0\nf 1/1 2 3/5\n").encode(), "a.obj"),  # mixed corner forms
        (ply(faces="3 0 1 9\n"), "a.ply"),
        (ply(faces="3 0 -1 2\n"), "a.ply"),
    ],
)
def test_face_index_out_of_range_is_rejected(data: bytes, name: str) -> None:
    with pytest.raises(InputError, match=f"^{name}: face indices out of range"):
        load_mesh(data, name, **LIMITS)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (TRIANGLE.replace("0 1 0", "nan 1 0").encode() + b"f 1 2 3\n", "a.obj"),
        (TRIANGLE.replace("0 1 0", "0 inf 0").encode() + b"f 1 2 3\n", "a.obj"),
        (ply(third="0 nan 0"), "a.ply"),
    ],
)
def test_non_finite_vertex_is_rejected(data: bytes, name: str) -> None:
    with pytest.raises(InputError, match="non-finite coordinates .* at index 2"):
        load_mesh(data, name, **LIMITS)


@pytest.mark.parametrize("fmt", ["glb", "obj", "ply", "stl"])
def test_more_faces_than_the_limit_is_rejected(fmt: str) -> None:
    mesh = blob(2)
    n = len(mesh.faces)
    data = export_mesh(mesh, fmt)[f"mesh.{fmt}"]
    with pytest.raises(InputError, match=f"mesh.{fmt} has {n} faces; the limit is {n - 1}"):
        load_mesh(data, f"mesh.{fmt}", max_faces=n - 1, max_pixels=MAX_PIXELS)
    assert len(load_mesh(data, f"mesh.{fmt}", max_faces=n, max_pixels=MAX_PIXELS).faces) == n


def test_truncated_binary_stl_is_rejected() -> None:
    data = export_mesh(blob(1), "stl")["mesh.stl"]
    with pytest.raises(InputError, match="too short for a binary STL"):
        load_mesh(data[:-100], "cut.stl", **LIMITS)


def test_export_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="cannot export 'fbx'"):
        export_mesh(blob(1), "fbx")
