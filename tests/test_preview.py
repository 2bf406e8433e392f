"""The headless preview renderer: what it draws, where, and in which colours."""

from __future__ import annotations

import io

import numpy as np
import trimesh
from PIL import Image

from geometry.png import png_bytes
from geometry.raster import rasterize
from geometry.render import BACKGROUND_TOP, render, silhouette


def _l_mesh() -> trimesh.Trimesh:
    """An L of two boxes: tall bar on the left, foot to the right."""
    bar = trimesh.creation.box([0.2, 1.0, 0.2])
    bar.apply_translation([-0.3, 0, 0])
    foot = trimesh.creation.box([0.6, 0.2, 0.2])
    foot.apply_translation([0.1, -0.4, 0])
    return trimesh.util.concatenate([bar, foot])


def _foreground(rgb: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    return np.abs(rgb.astype(int) - background).max(axis=2) > 12


def test_render_draws_the_object_over_the_background() -> None:
    rgb = render(trimesh.creation.icosphere(subdivisions=3), size=128)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    assert (np.abs(rgb[64, 64].astype(int) - BACKGROUND_TOP).max()) > 20
    assert (np.abs(rgb[2, 2].astype(int) - BACKGROUND_TOP).max()) < 5


def test_background_colour_can_be_chosen() -> None:
    rgb = render(trimesh.creation.icosphere(), size=64, background=(10, 20, 30))
    assert (rgb[0, 0] == (10, 20, 30)).all() and (rgb[-1, -1] == (10, 20, 30)).all()


def test_object_is_fitted_to_the_frame_with_a_margin() -> None:
    box = trimesh.creation.box([10.0, 10.0, 10.0])  # far larger than the unit frame
    fg = _foreground(render(box, size=100, view="front", background=(0, 0, 0)), (0, 0, 0))
    rows, cols = np.nonzero(fg)
    assert 2 <= rows.min() <= 12 and 88 <= rows.max() <= 98
    assert 2 <= cols.min() <= 12 and 88 <= cols.max() <= 98


def test_vertex_colours_show_in_the_render() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    sphere.visual.vertex_colors = np.tile([20, 200, 30, 255], (len(sphere.vertices), 1))
    centre = render(sphere, size=96, view="front")[48, 48].astype(int)
    assert centre[1] > centre[0] + 60 and centre[1] > centre[2] + 60


def test_face_colours_show_in_the_render() -> None:
    box = trimesh.creation.box([1.0, 1.0, 1.0])
    box.visual.face_colors = np.tile([200, 30, 200, 255], (len(box.faces), 1))
    centre = render(box, size=64, view="front")[32, 32].astype(int)
    assert centre[0] > centre[1] + 60 and centre[2] > centre[1] + 60


def test_texture_is_sampled_per_pixel_with_its_top_up() -> None:
    """A quad facing +Z, textured red above and blue below (trimesh UVs: v runs up)."""
    quad = trimesh.Trimesh(
        vertices=[[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]],
        faces=[[0, 1, 2], [0, 2, 3]],
        process=False,
    )
    image = np.zeros((32, 32, 3), np.uint8)
    image[:16] = (220, 20, 20)
    image[16:] = (20, 20, 220)
    quad.visual = trimesh.visual.TextureVisuals(
        uv=[[0, 0], [1, 0], [1, 1], [0, 1]], image=Image.fromarray(image)
    )
    rgb = render(quad, size=64, view="front").astype(int)
    top, bottom = rgb[16, 32], rgb[48, 32]
    assert top[0] > top[2] + 60 and bottom[2] > bottom[0] + 60


def test_a_scene_of_parts_renders_every_part_in_its_own_colour() -> None:
    a = trimesh.creation.box([0.4, 0.4, 0.4])
    b = trimesh.creation.box([0.4, 0.4, 0.4])
    b.apply_translation([0.6, 0, 0])
    rgb = render(trimesh.Scene([a, b]), size=128, view="front")
    left, right = rgb[64, 40].astype(int), rgb[64, 100].astype(int)
    assert np.abs(left - BACKGROUND_TOP).max() > 40 and np.abs(right - BACKGROUND_TOP).max() > 40
    assert np.abs(left - right).max() > 40


def test_a_scene_applies_each_geometry_transform() -> None:
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box([0.2, 0.2, 0.2]))
    scene.add_geometry(trimesh.creation.box([0.2, 0.2, 0.2]), transform=np.eye(4))
    moved = np.eye(4)
    moved[:3, 3] = [0, 1.0, 0]  # second copy one unit up
    scene.graph.update(list(scene.graph.nodes_geometry)[1], matrix=moved)
    fg = silhouette(scene, 20, 60)
    assert fg[:15].any() and fg[-15:].any() and not fg[25:35].any()


def test_the_front_view_is_not_mirrored() -> None:
    front = silhouette(_l_mesh(), 60, 100)
    assert front[5, 5] and not front[5, 55]  # the tall bar is on the left
    assert front[95, 55]  # the foot reaches right at the bottom


def test_three_quarter_view_is_not_mirrored() -> None:
    """The bar's top (at -X) must land in the left half; its mirror's in the right."""
    mirror = _l_mesh()
    mirror.apply_transform(np.diag([-1.0, 1.0, 1.0, 1.0]))
    bg = (0, 0, 0)
    top = [_foreground(render(m, size=96, background=bg), bg)[:24] for m in (_l_mesh(), mirror)]
    assert top[0][:, :48].sum() > 5 * top[0][:, 48:].sum()
    assert top[1][:, 48:].sum() > 5 * top[1][:, :48].sum()


def test_three_quarter_view_differs_from_the_front_view() -> None:
    mesh = _l_mesh()
    assert not np.array_equal(render(mesh, size=64), render(mesh, size=64, view="front"))


def test_nearer_triangle_wins_the_pixel() -> None:
    xy = np.array([[0, 0], [10, 0], [0, 10], [0, 0], [10, 0], [0, 10]], float)
    depth = np.array([5, 5, 5, 1, 1, 1], float)  # the second triangle is nearer
    faces, _ = rasterize(xy, depth, np.array([[0, 1, 2], [3, 4, 5]]), 10, 10)
    assert (faces[faces >= 0] == 1).all() and (faces >= 0).sum() > 30


def test_png_bytes_round_trips() -> None:
    rgb = render(_l_mesh(), size=48)
    back = np.asarray(Image.open(io.BytesIO(png_bytes(rgb))).convert("RGB"))
    assert np.array_equal(back, rgb)
