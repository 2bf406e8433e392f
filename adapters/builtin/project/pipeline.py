"""builtin-project: texture a mesh on the CPU by projecting its picture onto it.

The picture is the mesh seen from +Z (DESIGN.md: picture x to +X, picture up to +Y), so
every surface point has a place in it: its (x, y), with the mesh's front-view bounding
box laid over the subject's bounding box in the picture. The pipeline, each step a
function over numpy arrays (I/O stays in the adapter):

1. ``atlas.uv_atlas``: charts, then xatlas packs them into one square texture. Each face
   goes to the axis direction it faces most (smoothed over its neighbours), a chart is a
   connected run of one direction laid out by projecting along it: no triangle flips,
   the front charts are the picture's own pixel grid, and it costs linear time. Faces
   hidden behind others of their own direction start charts of their own, so no chart
   folds over itself. (xatlas's own charting is slow on the dense, smooth meshes that
   marching cubes makes: neighbours within 0.8 degrees count as coplanar, so a whole
   dome becomes one "planar" region past any area cap, fails to flatten and is cut up
   piece by piece: 30-60 s at 100k faces, where this takes under a second.)
2. ``texels.texel_samples``: the triangles rasterised in UV space, each covered texel with its
   face and barycentric weights, plus a gutter of ``padding`` texels around every chart,
   each taking the nearest chart texel's face: bilinear filtering and mipmaps then read
   the chart's own colours across its edge, never the empty atlas.
3. ``picture_points``: where a 3D point lands in the picture: the mesh's front-view box
   fitted inside the subject's box (``subject.foreground_mask``, as builtin-inflate
   finds it, so a mesh it inflated lines up with the picture the way it was built),
   aspect kept.
4. ``visibility.seen``: depth maps from the front and from the back (a z-buffer of the mesh); a
   sample facing +Z that nothing hides from the front is seen in the picture; one facing
   -Z that nothing hides from the back is seen in the picture's mirror through depth,
   which has the same (x, y) lookup, so front and back meet without a seam at the sides.
5. ``project``: seen samples take the picture's colour; hidden ones (behind an arm, in a
   fold) the colour of the nearest seen sample in 3D; the rest of the atlas the mean.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.base import InputError
from adapters.builtin.project.atlas import UVAtlas, uv_atlas
from adapters.builtin.project.texels import texel_samples
from adapters.builtin.project.visibility import MIN_EXTENT, seen
from adapters.builtin.subject import foreground_mask, picture_colours
from geometry.camera import to_screen
from geometry.measures import face_areas

MAX_NEAREST_SOURCES = 200_000  # seen samples the hidden ones pick their colour from


class ProjectParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texture_size: int = Field(
        1024, ge=256, le=4096, description="width and height of the texture, in texels"
    )
    padding: int = Field(
        4, ge=1, le=16, description="texels of colour bled beyond each chart's edge"
    )


def project(
    mesh: Any, rgba: np.ndarray, params: ProjectParams
) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """The whole backend: (textured trimesh, (size, size, 3) uint8 texture, info)."""
    import trimesh
    from PIL import Image
    from scipy.spatial import cKDTree

    size, padding = params.texture_size, params.padding
    clock = [time.perf_counter()]
    vertices = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    check_mesh(vertices, faces)
    mask = foreground_mask(rgba)
    clock.append(time.perf_counter())

    atlas = uv_atlas(vertices, faces, size=size, padding=padding)
    clock.append(time.perf_counter())

    samples = texel_samples(atlas.uv, atlas.faces, size, padding)
    av = vertices[atlas.vmap]
    corners = atlas.faces[samples.faces]  # (S, 3); float32 from here: millions of texels
    points = sum(
        av[corners[:, k]].astype(np.float32) * samples.bary[:, k : k + 1] for k in range(3)
    )
    clock.append(time.perf_counter())

    tri = av[atlas.faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face_z = face_n[:, 2] / np.maximum(np.linalg.norm(face_n, axis=1), 1e-30)
    normal_z = face_z.astype(np.float32)[samples.faces]
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    px_per_unit = picture_scale(lo, hi, mask)
    picture_px = px_per_unit * float((hi - lo).max())
    from_front, from_back, trusted = seen(points, normal_z, vertices, faces, picture_px)
    clock.append(time.perf_counter())

    shown = from_front | from_back
    px, py = picture_points(points[shown], lo, hi, mask)
    # The picture's pixels per texel: detail finer than a texel is averaged, not aliased.
    px_per_texel = px_per_unit * _texel_length(atlas, av, size)
    colours = np.empty((len(points), 3), np.uint8)
    colours[shown] = picture_colours(rgba, mask, px, py, blur_px=0.5 * px_per_texel)[:, :3]
    hidden = ~shown
    if hidden.any():
        source = np.flatnonzero(trusted if trusted.any() else shown)
        source = source[:: max(1, len(source) // MAX_NEAREST_SOURCES)]
        _, nearest = cKDTree(points[source]).query(points[hidden])
        colours[hidden] = colours[source[nearest]]
    texture = np.empty((size, size, 3), np.uint8)
    texture[...] = np.round(colours[samples.covered].mean(axis=0)).astype(np.uint8)
    texture[samples.rows, samples.cols] = colours
    clock.append(time.perf_counter())

    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(texture), metallicFactor=0.0, roughnessFactor=1.0
    )
    out = trimesh.Trimesh(
        av,
        atlas.faces,
        vertex_normals=np.asarray(mesh.vertex_normals)[atlas.vmap],
        visual=trimesh.visual.TextureVisuals(uv=atlas.uv, material=material),
        process=False,
    )
    clock.append(time.perf_counter())
    covered = samples.covered
    n_cov = max(int(covered.sum()), 1)
    info = {
        "texture_size": size,
        "charts": atlas.charts,
        "atlas_utilisation": round(atlas.utilisation, 4),
        "texels_covered": int(covered.sum()),
        "texels_gutter": int((~covered).sum()),
        "share_front": round(float((from_front & covered).sum()) / n_cov, 4),
        "share_back": round(float((from_back & covered).sum()) / n_cov, 4),
        "share_fill": round(float((hidden & covered).sum()) / n_cov, 4),
        "seconds": {
            stage: round(float(dt), 4)
            for stage, dt in zip(
                ("check", "atlas", "texels", "visibility", "colour", "mesh"),
                np.diff(clock),
                strict=True,
            )
        },
    }
    return out, texture, info


def check_mesh(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Refuse what cannot carry a projected texture: no area, or edge-on to the picture."""
    if len(faces) == 0:
        raise InputError("mesh has no faces to texture")
    area = face_areas(vertices, faces)
    extent = vertices.max(axis=0) - vertices.min(axis=0)
    if not area.sum() > MIN_EXTENT**2 * len(faces):
        raise InputError("mesh is degenerate: its faces have no area to lay a texture on")
    if extent[0] <= MIN_EXTENT * extent.max() or extent[1] <= MIN_EXTENT * extent.max():
        raise InputError(
            "mesh has no width or no height seen from the front (+Z); the picture cannot be"
            " projected onto it"
        )


def _texel_length(atlas: UVAtlas, av: np.ndarray, size: int) -> float:
    """Mesh units per texel (the square root of 3D area over UV area, in texels)."""
    a3 = 2.0 * face_areas(av, atlas.faces).sum()  # doubled, as a2 is
    uv = atlas.uv[atlas.faces] * size
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    a2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    return float(np.sqrt(a3 / max(a2, 1e-20)))


def picture_points(
    points: np.ndarray, lo: np.ndarray, hi: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Picture coordinates (px right, py down, pixel k spanning [k, k + 1]) of 3D points.

    The mesh's front-view box [lo, hi] (x, y) is scaled to fit inside the subject's box
    and centred on it: for a mesh inflated from this picture the two boxes coincide.
    """
    r0, r1, c0, c1 = _subject_box(mask)
    xy = to_screen(
        points, (lo + hi) / 2, picture_scale(lo, hi, mask), ((c0 + c1) / 2, (r0 + r1) / 2)
    )
    return xy[:, 0], xy[:, 1]


def picture_scale(lo: np.ndarray, hi: np.ndarray, mask: np.ndarray) -> float:
    """Picture pixels per mesh unit: the front-view box fitted inside the subject's box."""
    r0, r1, c0, c1 = _subject_box(mask)
    return float(min((c1 - c0) / (hi[0] - lo[0]), (r1 - r0) / (hi[1] - lo[1])))


def _subject_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
