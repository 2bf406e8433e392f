"""builtin-project: the picture lands on the front, its mirror on the back, hidden parts
take their neighbours' colours, the atlas neither folds nor leaves texels bare, and the
GLB carries it all."""

from __future__ import annotations

import io
import json
from functools import cache
from typing import Any

import numpy as np
import pytest
import trimesh
from PIL import Image
from pydantic import ValidationError
from scipy import ndimage

from adapters.base import InputError, Item, Result
from adapters.builtin.inflate.pipeline import InflateParams, inflate
from adapters.builtin.project import ProjectAdapter
from adapters.builtin.project.atlas import uv_atlas
from adapters.builtin.project.pipeline import ProjectParams, project
from adapters.builtin.project.texels import texel_xy
from geometry.barycentric import pixel_barycentric as barycentric
from geometry.raster import face_image
from geometry.render import render
from storage.mesh_export import export_mesh
from storage.meshes import load_mesh
from tests.pictures import MAX_PIXELS
from tests.shapes import SHAPES, picture

SIZE = 512  # texture side in these tests: enough for the drawn pictures, and quick
PALETTE = np.array([[220, 60, 40], [40, 160, 70], [40, 90, 210], [230, 200, 40]])


def _patterned(mask: np.ndarray) -> np.ndarray:
    """RGBA on white: a different colour per quadrant, darker in every other 12-px band,
    so that a shift, a mirror or a smear all show."""
    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w]
    rows, cols = np.nonzero(mask)
    quadrant = (yy < rows.mean()) * 2 + (xx < cols.mean())
    rgb = PALETTE[quadrant]
    rgb = np.where(((yy // 12) % 2 == 0)[..., None], rgb, rgb * 55 // 100)
    rgba = np.full((h, w, 4), 255, np.uint8)
    rgba[mask, :3] = rgb[mask]
    return rgba


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue()


def _crop(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    r, c = np.nonzero(mask)
    return a[r.min() : r.max() + 1, c.min() : c.max() + 1]


@cache
def _plain(shape: str) -> trimesh.Trimesh:
    """builtin-inflate's mesh of a drawn silhouette, its vertex colours stripped."""
    mesh, _ = inflate(picture(SHAPES[shape](), "white"), InflateParams())
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)


@cache
def _textured(shape: str) -> tuple[trimesh.Trimesh, np.ndarray, dict]:
    """The plain mesh textured from a patterned picture of the same silhouette."""
    return project(_plain(shape), _patterned(SHAPES[shape]()), ProjectParams(texture_size=SIZE))


def _texture_of(mesh: trimesh.Trimesh) -> Any:
    """The mesh's TextureVisuals (typed loosely: trimesh's visual is a union)."""
    assert mesh.visual is not None and mesh.visual.kind == "texture"
    return mesh.visual


def _front_albedo(mesh: trimesh.Trimesh, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """The unlit texture colour seen from +Z, the front-view box fitted to w x h exactly
    (as the picture's subject crop is), and where the mesh is."""
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    lo, hi = v.min(axis=0), v.max(axis=0)
    xy = np.column_stack(
        [(v[:, 0] - lo[0]) / (hi[0] - lo[0]) * w, (hi[1] - v[:, 1]) / (hi[1] - lo[1]) * h]
    )
    img = face_image(xy, -v[:, 2], f, w, h)
    rows, cols = np.nonzero(img >= 0)
    bary = barycentric(xy, f, img[rows, cols], rows, cols)
    visual = _texture_of(mesh)
    uv = (np.asarray(visual.uv)[f[img[rows, cols]]] * bary[..., None]).sum(axis=1)
    tex = np.asarray(visual.material.baseColorTexture.convert("RGB"), np.float64)
    t = tex.shape[0]
    texel = np.clip((texel_xy(uv, t)).astype(np.int64), 0, t - 1)
    out = np.zeros((h, w, 3))
    out[rows, cols] = tex[texel[:, 1], texel[:, 0]]
    return out, img >= 0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def _turned(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Half a turn about +Y: the back now faces the front-view camera."""
    out = mesh.copy()
    out.apply_transform(trimesh.transformations.rotation_matrix(np.pi, [0, 1, 0]))
    return out


# ------------------------------------------------------------------ what it looks like


@pytest.mark.parametrize("shape", ["figure", "l_shape"])
def test_front_view_is_the_picture(shape: str) -> None:
    mask = SHAPES[shape]()
    target = _crop(_patterned(mask)[..., :3], mask)
    seen, inside = _front_albedo(_textured(shape)[0], target.shape[1], target.shape[0])
    # Compare away from the outline, where a pixel is part subject, part background.
    core = ndimage.binary_erosion(inside & _crop(mask, mask), iterations=2)
    assert core.sum() > 0.5 * _crop(mask, mask).sum()
    assert _psnr(seen[core], target[core]) >= 20.0
    # ...and it is the picture the right way round, not its mirror image.
    assert _psnr(seen[core], target[:, ::-1][core]) < 15.0


def test_back_view_is_the_pictures_mirror_image_not_black() -> None:
    mask = SHAPES["figure"]()
    target = _crop(_patterned(mask)[..., :3], mask)[:, ::-1]  # seen from behind
    seen, inside = _front_albedo(_turned(_textured("figure")[0]), target.shape[1], target.shape[0])
    core = ndimage.binary_erosion(inside & (target < 255).any(axis=2), iterations=2)
    assert seen[core].mean() > 60  # the darkest stripes average ~70; black is 0
    assert _psnr(seen[core], target[core]) >= 20.0


def test_preview_render_shows_the_pictures_colours_on_the_front() -> None:
    """The runner's own renderer samples the texture: each quadrant shows its colour."""
    rgb = render(_textured("figure")[0], size=256, view="front", background=(0, 0, 0))
    body = rgb.astype(float).sum(axis=2) > 30
    rows, cols = np.nonzero(body)
    top, left = rows < rows.mean(), cols < cols.mean()  # the picture's quadrants, too
    # The renderer shades, so compare chromaticity: each quadrant's mean colour is
    # nearest its own palette colour (index 2 * upper + left), not another's.
    chroma = PALETTE / PALETTE.sum(axis=1, keepdims=True)
    for upper in (False, True):
        for is_left in (False, True):
            sel = (top == upper) & (left == is_left)
            mean = rgb[rows[sel], cols[sel]].astype(float).mean(axis=0)
            nearest = np.argmin(np.linalg.norm(chroma - mean / mean.sum(), axis=1))
            assert nearest == 2 * upper + is_left, (upper, is_left, mean)


def test_hidden_surfaces_take_the_colour_of_the_nearest_seen_surface() -> None:
    """A small ball in front of a big one hides a patch of it (and its own back)."""
    big = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    small = trimesh.creation.icosphere(subdivisions=3, radius=0.1).apply_translation([0, 0, 0.8])
    mesh = trimesh.util.concatenate([big, small])
    yy, xx = np.mgrid[:200, :200] + 0.5
    rgba = np.full((200, 200, 4), 255, np.uint8)
    r = np.hypot(xx - 100, yy - 100)
    rgba[r < 100, :3] = (210, 40, 40)  # the big ball's disk fills the picture
    rgba[r < 20, :3] = (40, 60, 220)  # the small ball's, at the centre
    out, tex, info = project(mesh, rgba, ProjectParams(texture_size=SIZE))
    assert info["share_fill"] > 0.002

    def colour_at(point: tuple[float, float, float]) -> np.ndarray:
        face = np.argmin(np.linalg.norm(out.triangles_center - point, axis=1))
        corners = texel_xy(np.asarray(_texture_of(out).uv)[out.faces[face]], SIZE)
        col, row = np.clip(corners.mean(axis=0).astype(int), 0, SIZE - 1)
        return tex[row, col].astype(int)

    hidden_on_big = colour_at((0.0, 0.0, 0.5))  # behind the small ball
    back_of_small = colour_at((0.0, 0.0, 0.7))  # faces the big ball
    assert hidden_on_big[0] > 150 and hidden_on_big[2] < 100, hidden_on_big
    assert back_of_small[2] > 150 and back_of_small[0] < 100, back_of_small


# ------------------------------------------------------------------ the atlas


def test_every_texel_a_triangle_covers_is_painted_and_so_is_the_gutter() -> None:
    mesh, tex, _ = _textured("figure")
    xy = texel_xy(np.asarray(_texture_of(mesh).uv), SIZE)
    covered = face_image(xy, np.zeros(len(xy)), np.asarray(mesh.faces), SIZE, SIZE) >= 0
    # A triangle smaller than a texel covers the texel it lies in.
    centre = np.clip(xy[mesh.faces].mean(axis=1).astype(int), 0, SIZE - 1)
    covered[centre[:, 1], centre[:, 0]] = True
    dist = ndimage.distance_transform_cdt(~covered, metric="chessboard")
    far = tex[dist > ProjectParams().padding + 2]
    assert len(far) > 1000
    fill = far[0]
    assert (far == fill).all()  # one fill colour where no chart reaches
    assert not (tex[covered] == fill).all(axis=1).any()
    gutter = (dist >= 1) & (dist <= 3)  # bilinear and the first mipmaps read these
    assert gutter.sum() > 0
    assert not (tex[gutter] == fill).all(axis=1).any()


def _helicoid() -> trimesh.Trimesh:
    """A ramp winding one and a half turns: every face looks up, and seen from above the
    surface lies over itself, so a chart that just projected it would fold."""
    r = np.linspace(0.2, 0.5, 8)
    t = np.linspace(0.0, 3.0 * np.pi, 150)
    rr, tt = np.meshgrid(r, t, indexing="ij")
    v = np.column_stack([(rr * np.cos(tt)).ravel(), (0.08 * tt).ravel(), (rr * np.sin(tt)).ravel()])
    idx = np.arange(rr.size).reshape(rr.shape)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1), np.stack([a, d, c], -1)]).reshape(-1, 3)
    mesh = trimesh.Trimesh(v, faces, process=False)
    if mesh.face_normals[:, 1].mean() < 0:
        mesh.invert()
    return mesh


def test_charts_do_not_fold_where_the_surface_winds_over_itself() -> None:
    mesh = _helicoid()
    atlas = uv_atlas(np.asarray(mesh.vertices), np.asarray(mesh.faces), size=SIZE, padding=2)
    xy = texel_xy(atlas.uv, SIZE)
    t = xy[atlas.faces]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    covered = (face_image(xy, np.zeros(len(xy)), atlas.faces, SIZE, SIZE) >= 0).sum()
    # Texels under some triangle over texels' worth of triangle area: two surfaces
    # sharing texels would pull this well under 1 (a third of the ramp overlaps).
    assert covered / area > 0.97
    assert np.allclose(np.asarray(mesh.vertices)[atlas.vmap][atlas.faces], mesh.triangles)


def test_uvs_cover_every_face_in_order_and_stay_in_the_unit_square() -> None:
    mesh = _plain("star")
    atlas = uv_atlas(np.asarray(mesh.vertices), np.asarray(mesh.faces), size=SIZE, padding=4)
    assert len(atlas.faces) == len(mesh.faces)
    assert np.allclose(np.asarray(mesh.vertices)[atlas.vmap][atlas.faces], mesh.triangles)
    assert atlas.uv.min() >= 0.0 and atlas.uv.max() <= 1.0


# ------------------------------------------------------------------ output and adapter


def test_glb_round_trip_keeps_uvs_and_the_texture() -> None:
    mesh, tex, _ = _textured("l_shape")
    files = export_mesh(mesh, "glb")
    back = load_mesh(files["mesh.glb"], "mesh.glb", max_faces=10**6, max_pixels=MAX_PIXELS)
    assert len(back.faces) == len(mesh.faces)
    visual = _texture_of(back)
    assert np.asarray(visual.uv).shape == (len(back.vertices), 2)
    image = visual.material.baseColorTexture
    assert np.array_equal(np.asarray(image.convert("RGB")), tex)


def test_adapter_returns_the_textured_mesh_and_texture_png() -> None:
    mask = SHAPES["disk"]()
    item = Item(
        job_id=1,
        task="texture",
        params={"texture_size": 256},
        images=[_png(_patterned(mask))],
        image_names=["disk.png"],
        mesh=_plain("disk"),
    )
    (res,) = ProjectAdapter("builtin-project").run_batch([item])
    assert isinstance(res, Result), res
    assert res.mesh.visual.kind == "texture"
    (art,) = res.artifacts
    assert art.name == "texture.png"
    assert Image.open(io.BytesIO(art.data)).size == (256, 256)
    info = json.loads(json.dumps(res.info))  # JSON-safe for the manifest
    assert info["texture_size"] == 256 and info["charts"] >= 2
    assert info["share_front"] + info["share_back"] + info["share_fill"] == pytest.approx(
        1, abs=0.01
    )
    assert {"atlas", "texels", "visibility", "colour", "total"} <= set(info["seconds"])


def _item(**kw: object) -> Item:
    base: dict = {"job_id": 7, "task": "texture", "params": {}}
    base.update(kw)
    return Item(**base)  # type: ignore[arg-type]


def test_no_picture_is_an_input_error_that_says_so() -> None:
    (res,) = ProjectAdapter("builtin-project").run_batch([_item(mesh=_plain("disk"))])
    assert isinstance(res, InputError)
    assert "picture" in str(res) and "image" in str(res)


def test_no_mesh_is_an_input_error_that_says_so() -> None:
    png = _png(_patterned(SHAPES["disk"]()))
    (res,) = ProjectAdapter("builtin-project").run_batch([_item(images=[png])])
    assert isinstance(res, InputError) and "mesh" in str(res)


def test_mesh_seen_edge_on_from_the_front_is_an_input_error() -> None:
    """A flat square in the YZ plane has no width in the picture to project onto."""
    square = trimesh.Trimesh([[0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1]], [[0, 1, 2], [0, 2, 3]])
    with pytest.raises(InputError, match="no width or no height"):
        project(square, _patterned(SHAPES["disk"]()), ProjectParams())


def test_picture_without_a_subject_is_an_input_error() -> None:
    blank = np.zeros((64, 64, 4), np.uint8)  # fully transparent
    with pytest.raises(InputError, match="transparent"):
        project(_plain("disk"), blank, ProjectParams())


def test_one_bad_item_does_not_spoil_the_batch() -> None:
    good = _item(images=[_png(_patterned(SHAPES["disk"]()))], mesh=_plain("disk"),
                 params={"texture_size": 256})  # fmt: skip
    out = ProjectAdapter("builtin-project").run_batch([_item(mesh=_plain("disk")), good])
    assert isinstance(out[0], InputError) and isinstance(out[1], Result)


@pytest.mark.parametrize(
    "params", [{"texture_size": 100}, {"texture_size": 8192}, {"padding": 0}, {"size": 512}]
)
def test_params_out_of_range_or_unknown_are_refused(params: dict) -> None:
    with pytest.raises(ValidationError):
        ProjectParams.model_validate(params)
