"""builtin-inflate: image to mesh on the CPU by inflating the picture's silhouette.

The pipeline, each step a function over numpy arrays (I/O stays in the adapter):

1. ``subject.foreground_mask``: from alpha when the picture has transparency, else from
   the border colour (background = pixels of that colour connected to the border;
   enclosed background-coloured regions stay holes when large, get filled when they are
   specks).
2. ``field.signed_distance``: the silhouette's signed distance in pixels (positive
   inside), smoothed a little so the pixel staircase of the outline does not show as
   ripples, then sampled onto the coarser grid.
3. ``field.balloon``: a Poisson solve lap(u) = -2 inside the outline with u = 0 exactly
   on it (ghost-fluid boundary). sqrt(u) is a circular cross-section for a tube of any
   width, so thin limbs come out round and large blobs come out domed.
4. ``inflate``: marching cubes on f(x, y, z) = depth^2 u(x, y) - z^2 (front and back
   mirrored), one closed watertight surface with normals taken from the field, coloured
   from the picture, placed in the glTF frame of DESIGN.md: picture x to +X, picture up
   to +Y, front to +Z, centred, longest side 1.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.base import InputError
from adapters.builtin.inflate.field import balloon, signed_distance
from adapters.builtin.subject import foreground_mask, picture_colours

MAX_VOLUME_CELLS = 24_000_000  # bounds the marching-cubes volume (float32) near 100 MB
TOO_THIN = "foreground is too thin to inflate at this resolution; try a higher `resolution`"


class InflateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(
        128, ge=32, le=512, description="grid cells along the silhouette's longest side"
    )
    depth: float = Field(1.0, ge=0.1, le=3.0, description="thickness factor; 1 is round")
    smooth: float = Field(
        0.5, ge=0.0, le=4.0, description="outline smoothing, in grid cells (0: none)"
    )


def inflate_mesh(
    rgba: np.ndarray, *, resolution: int = 128, depth: float = 1.0, smooth: float = 0.5
) -> Any:
    """The whole backend on one decoded picture: a coloured, watertight trimesh."""
    return inflate(rgba, InflateParams(resolution=resolution, depth=depth, smooth=smooth))[0]


def inflate(rgba: np.ndarray, params: InflateParams) -> tuple[Any, dict[str, Any]]:
    """``inflate_mesh`` plus the numbers worth recording (mask size, grid, timings)."""
    import trimesh
    from scipy import ndimage
    from skimage.measure import marching_cubes

    clock = [time.perf_counter()]  # stage boundaries, for the job's info
    mask = foreground_mask(rgba)
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    longest = max(r1 - r0, c1 - c0)
    # Picture pixels per grid cell; never much under one, a finer grid adds no detail.
    cell = longest / min(params.resolution, max(longest, 32))
    blur_px = params.smooth * max(cell, 1.0)
    margin = int(np.ceil(3 * cell + 3 * blur_px)) + 2
    # The crop is padded with background so the distance field sees an outline all round,
    # even where the subject touches the picture's edge.
    crop = np.zeros((r1 - r0 + 2 * margin, c1 - c0 + 2 * margin), dtype=bool)
    crop[margin:-margin, margin:-margin] = mask[r0:r1, c0:c1]
    phi_px = signed_distance(crop, blur_px=blur_px)
    clock.append(time.perf_counter())

    pad = 2
    ny = int(np.ceil((r1 - r0) / cell)) + 2 * pad
    nx = int(np.ceil((c1 - c0) / cell)) + 2 * pad
    # Cell centres in crop pixel coordinates (pixel k spans [k, k + 1], centre k + 0.5).
    ys = margin + (np.arange(ny) - pad + 0.5) * cell
    xs = margin + (np.arange(nx) - pad + 0.5) * cell
    gy, gx = np.meshgrid(ys - 0.5, xs - 0.5, indexing="ij")
    phi = ndimage.map_coordinates(phi_px, [gy, gx], order=1, mode="nearest") / cell
    phi[:pad], phi[-pad:], phi[:, :pad], phi[:, -pad:] = -1.0, -1.0, -1.0, -1.0
    if (phi > 0).sum() < 4:
        raise InputError(TOO_THIN)
    height2 = params.depth**2 * balloon(phi)  # squared half-thickness, in cells^2
    clock.append(time.perf_counter())

    top = float(np.sqrt(max(height2.max(), 0.0))) + 2.0
    # z layers one cell apart, or wider when a thick shape at a high resolution would
    # need a huge volume: the steep rim has many layers per cell anyway, and the z of
    # every vertex is made exact below.
    dz = max(1.0, nx * ny * 2 * top / MAX_VOLUME_CELLS)
    layers = int(np.ceil(top / dz))
    z = np.arange(-layers, layers + 1, dtype=np.float32) * np.float32(dz)
    volume = height2.astype(np.float32)[:, :, None] - (z * z)[None, None, :]
    volume = np.pad(volume, 1, constant_values=-1.0)  # closed at every side of the box
    verts, faces, _normals, _ = marching_cubes(
        volume, level=0.0, spacing=(1.0, 1.0, dz), allow_degenerate=False
    )
    if len(faces) == 0:
        raise InputError(TOO_THIN)
    verts -= (1.0, 1.0, dz)  # undo the padding
    # Linear interpolation of z^2 along z edges misplaces those vertices (by up to a
    # quarter layer near z = 0); put them on the exact surface |z| = sqrt(height2). Each
    # stays on its own edge, so no triangle flips.
    h_at = ndimage.map_coordinates(height2, verts[:, :2].T, order=1, mode="nearest")
    zc = np.sign(verts[:, 2] - layers * dz) * np.sqrt(np.maximum(h_at, 0.0))
    normals = surface_normals(height2, phi > 0, verts[:, :2], zc)
    clock.append(time.perf_counter())

    # Grid index -> picture pixel coordinates (y down) -> glTF frame (y up).
    px = c0 + (verts[:, 1] - pad + 0.5) * cell
    py = r0 + (verts[:, 0] - pad + 0.5) * cell
    xyz = np.column_stack([px, -py, zc * cell])
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    xyz = (xyz - (lo + hi) / 2) / float((hi - lo).max())
    colours = picture_colours(rgba, mask, px, py, blur_px=0.5 * cell)
    # (row, col, z) -> (x, -y, z) is a reflection, so the winding flips with it.
    mesh = trimesh.Trimesh(xyz, faces[:, ::-1], vertex_colors=colours, process=False)
    if mesh.volume < 0:
        mesh.invert()
    mesh.vertex_normals = normals  # after invert(), which would flip them
    clock.append(time.perf_counter())
    info = {
        "picture_px": [int(rgba.shape[1]), int(rgba.shape[0])],
        "mask_px": int(mask.sum()),
        "grid": [int(nx), int(ny), int(len(z))],
        "layer_cells": round(float(dz), 4),
        "cell_px": round(float(cell), 4),
        "vertices": int(len(mesh.vertices)),
        "faces": int(len(mesh.faces)),
        "seconds": {
            stage: round(float(dt), 4)
            for stage, dt in zip(
                ("mask", "field", "surface", "colour"), np.diff(clock), strict=True
            )
        },
    }
    return mesh, info


def surface_normals(
    height2: np.ndarray, inside: np.ndarray, rc: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Outward unit normals of |z| = sqrt(height2(row, col)) at vertices, in the glTF frame.

    Normals from the smooth field rather than from the triangles: marching cubes
    facets the steep rim into strips whose face normals wobble and shade as ripples.
    With F = height2 - z^2 (positive inside) the outward normal is -grad F, and
    (row, col, z) maps to (-y, x, z).
    """
    from scipy import ndimage

    # Differences only between inside cells: outside, u is merely an extension (slope x
    # phi) that bends where the outline does. Central where both exist, else one-sided;
    # cells outside take the gradient of the nearest inside cell.
    h = np.where(inside, height2, np.nan)
    _, (nr, nc) = ndimage.distance_transform_edt(~inside, return_indices=True)
    grads = []
    for axis in (0, 1):
        d = np.diff(h, axis=axis)
        back = np.pad(d, [(1, 0) if a == axis else (0, 0) for a in (0, 1)], constant_values=np.nan)
        fwd = np.pad(d, [(0, 1) if a == axis else (0, 0) for a in (0, 1)], constant_values=np.nan)
        g = np.where(np.isnan(back), fwd, np.where(np.isnan(fwd), back, (back + fwd) / 2))
        grads.append(np.nan_to_num(g)[nr, nc])
    h_r, h_c = (ndimage.map_coordinates(g, rc.T, order=1, mode="nearest") for g in grads)
    n = np.column_stack([-h_c, h_r, 2.0 * z])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
