"""The headless preview renderer."""

from __future__ import annotations

import numpy as np
import trimesh

from runner.preview import BACKGROUND_TOP, render, silhouette


def _l_mesh() -> trimesh.Trimesh:
    """An L of two boxes: tall bar on the left, foot to the right."""
    bar = trimesh.creation.box([0.2, 1.0, 0.2])
    bar.apply_translation([-0.3, 0, 0])
    foot = trimesh.creation.box([0.6, 0.2, 0.2])
    foot.apply_translation([0.1, -0.4, 0])
    return trimesh.util.concatenate([bar, foot])


def test_render_draws_the_object_over_the_background() -> None:
    rgb = render(trimesh.creation.icosphere(subdivisions=3), size=128)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    assert (np.abs(rgb[64, 64].astype(int) - BACKGROUND_TOP).max()) > 20
    assert (np.abs(rgb[2, 2].astype(int) - BACKGROUND_TOP).max()) < 5


def test_vertex_colours_show_in_the_render() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    sphere.visual.vertex_colors = np.tile([20, 200, 30, 255], (len(sphere.vertices), 1))
    centre = render(sphere, size=96, view="front")[48, 48].astype(int)
    assert centre[1] > centre[0] + 60 and centre[1] > centre[2] + 60


def test_a_scene_of_parts_renders_every_part_in_its_own_colour() -> None:
    a = trimesh.creation.box([0.4, 0.4, 0.4])
    b = trimesh.creation.box([0.4, 0.4, 0.4])
    b.apply_translation([0.6, 0, 0])
    rgb = render(trimesh.Scene([a, b]), size=128, view="front")
    left, right = rgb[64, 40].astype(int), rgb[64, 100].astype(int)
    assert np.abs(left - right).max() > 40


def test_the_render_is_not_mirrored() -> None:
    mesh = _l_mesh()
    front = silhouette(mesh, 60, 100)
    assert front[5, 5] and not front[5, 55]  # the tall bar is on the left
    assert front[95, 55]  # the foot reaches right at the bottom


def test_three_quarter_view_differs_from_the_front_view() -> None:
    mesh = _l_mesh()
    assert not np.array_equal(render(mesh, size=64), render(mesh, size=64, view="front"))
