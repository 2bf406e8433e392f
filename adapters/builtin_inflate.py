"""builtin-inflate: image to mesh on the CPU by inflating the picture's silhouette.

The pipeline, each step a function over numpy arrays (I/O stays in the adapter):

1. ``foreground_mask``: from alpha when the picture has transparency, else from the
   border colour (background = pixels of that colour connected to the border; enclosed
   background-coloured regions stay holes when large, get filled when they are specks).
2. ``signed_distance``: the silhouette's signed distance in pixels (positive inside),
   smoothed a little so the pixel staircase of the outline does not show as ripples,
   then sampled onto the coarser grid.
3. ``balloon``: a Poisson solve lap(u) = -2 inside the outline with u = 0 exactly on it
   (ghost-fluid boundary). sqrt(u) is a circular cross-section for a tube of any width,
   so thin limbs come out round and large blobs come out domed.
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

from adapters.base import Adapter, InputError, Item, Result
from storage.pictures import decode_rgba

ALPHA_CUT = 128  # alpha at or above this is the subject
MIN_TRANSPARENT_SHARE = 0.002  # fewer transparent pixels than this is no "real" transparency
MIN_FOREGROUND_PX = 16
MAX_FOREGROUND_SHARE = 0.98  # above this no background is left to cut the subject from
MAX_VOLUME_CELLS = 24_000_000  # bounds the marching-cubes volume (float32) near 100 MB
# Colour distance (RGB, 0-441) within which a pixel counts as background: above JPEG noise
# and soft vignetting (~10-20), below the contrast of a subject one would photograph on it.
BORDER_TOLERANCE = 40.0
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


# ---------------------------------------------------------------------------- mask


def foreground_mask(rgba: np.ndarray, *, tolerance: float = BORDER_TOLERANCE) -> np.ndarray:
    """Which pixels are the subject. Raises InputError when there is none to find."""
    alpha = rgba[..., 3]
    if (alpha < ALPHA_CUT).mean() >= MIN_TRANSPARENT_SHARE:
        mask = alpha >= ALPHA_CUT
        if not mask.any():
            raise InputError("picture is fully transparent: no subject to find")
    else:
        mask = _mask_from_border_colour(rgba[..., :3], tolerance)
    if mask.mean() > MAX_FOREGROUND_SHARE:
        raise InputError(
            "the subject fills the whole picture: no background to cut it from; leave a"
            " margin of background around it or use a transparent background"
        )
    mask = _drop_specks(mask)
    if mask.sum() < MIN_FOREGROUND_PX:
        raise InputError(
            f"the subject is too small ({int(mask.sum())} pixels;"
            f" at least {MIN_FOREGROUND_PX} needed)"
        )
    return mask | _small_holes(mask)


def _mask_from_border_colour(rgb: np.ndarray, tolerance: float) -> np.ndarray:
    """Background = the border's median colour, grown from the border through pixels near it.

    Growing from the border (rather than thresholding every pixel) keeps highlights and
    light shading inside the subject: they are near the background colour but enclosed.
    """
    from scipy import ndimage

    h, w, _ = rgb.shape
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    bg = np.median(border, axis=0)
    if np.mean(np.linalg.norm(border - bg, axis=1) <= tolerance) < 0.6:
        raise InputError(
            "cannot tell the subject from the background: the picture's border is not one flat"
            " colour; use a PNG with a transparent background"
        )
    dist = np.linalg.norm(rgb.astype(np.float32) - bg, axis=2)
    bg_like = dist <= tolerance
    labels, n = ndimage.label(bg_like)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge_labels = edge_labels[edge_labels > 0]
    mask = ~np.isin(labels, edge_labels)
    if not mask.any():
        raise InputError("picture has no foreground: every pixel matches the background colour")
    # Enclosed background-like regions: a real hole shows the background itself (nearly
    # exact colour) and is not tiny; a highlight or an off-white spot is only near it.
    index = np.arange(1, n + 1)
    sizes = ndimage.sum(bg_like, labels, index=index)
    closeness = ndimage.median(dist, labels, index=index)
    hole_min = max(64.0, 0.002 * h * w)
    holes = (sizes >= hole_min) & (closeness <= tolerance / 4)
    holes[edge_labels - 1] = False
    if holes.any():
        mask &= ~np.isin(labels, index[holes])
    return mask


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """Remove islands under 1 % of the largest one (dust, stray anti-aliasing)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= 0.01 * sizes.max()) + 1
    return np.isin(labels, keep)


def _small_holes(mask: np.ndarray) -> np.ndarray:
    """Pinholes (under 0.05 % of the picture) to fill; larger holes are kept."""
    from scipy import ndimage

    holes = ndimage.binary_fill_holes(mask) & ~mask
    labels, n = ndimage.label(holes)
    if n == 0:
        return np.zeros_like(mask)
    sizes = ndimage.sum(holes, labels, index=np.arange(1, n + 1))
    small = np.flatnonzero(sizes < max(4.0, 0.0005 * mask.size)) + 1
    return np.isin(labels, small)


# ---------------------------------------------------------------------------- fields


def signed_distance(mask: np.ndarray, *, blur_px: float = 0.0) -> np.ndarray:
    """Distance to the outline in pixels, positive inside (outline halfway between pixels).

    A Gaussian of ``blur_px`` leaves a straight outline where it is (a linear function is
    its own average) but rounds off the one-pixel steps of a slanted one.
    """
    from scipy import ndimage

    inside = ndimage.distance_transform_edt(mask) - 0.5
    outside = ndimage.distance_transform_edt(~mask) - 0.5
    phi = np.where(mask, inside, -outside).astype(np.float32)
    return ndimage.gaussian_filter(phi, blur_px) if blur_px > 0 else phi


def balloon(phi: np.ndarray) -> np.ndarray:
    """Solve lap(u) = -2 where phi > 0, u = 0 on phi = 0 (cell units), u < 0 outside.

    Dirichlet at the exact outline (not at cell centres) through ghost values: an edge
    from an inside cell to an outside one is cut at theta = phi_in / (phi_in - phi_out),
    so the stencil sees 0 at distance theta. ``phi`` must be negative on its outermost
    ring of cells.
    """
    from scipy import ndimage, sparse
    from scipy.sparse.linalg import spsolve

    inside = phi > 0
    idx = np.full(phi.shape, -1, dtype=np.int64)
    n = int(inside.sum())
    idx[inside] = np.arange(n)
    diag = np.zeros(n)
    rows, cols = [], []
    ii, jj = np.nonzero(inside)
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ni, nj = ii + di, jj + dj
        nb_in = inside[ni, nj]
        rows.append(idx[ii[nb_in], jj[nb_in]])
        cols.append(idx[ni[nb_in], nj[nb_in]])
        diag[idx[ii[nb_in], jj[nb_in]]] += 1.0
        out = ~nb_in
        pin, pout = phi[ii[out], jj[out]], phi[ni[out], nj[out]]
        np.add.at(diag, idx[ii[out], jj[out]], 1.0 / np.clip(pin / (pin - pout), 0.05, 1.0))
    rows_a, cols_a = np.concatenate(rows), np.concatenate(cols)
    a = sparse.csc_matrix(
        (
            np.concatenate([-np.ones(len(rows_a)), diag]),
            (np.concatenate([rows_a, np.arange(n)]), np.concatenate([cols_a, np.arange(n)])),
        ),
        shape=(n, n),
    )
    u = np.zeros(phi.shape)
    u[inside] = spsolve(a, np.full(n, 2.0))
    # Outside, u = g * phi with g the slope of u across the nearby outline: one field for
    # every grid edge, so marching cubes cuts each inside-outside edge where phi is zero
    # (per-edge ghost values averaged into one per cell would make the outline wobble).
    # Near the outline u ~ g phi - phi^2, hence g ~ (u + phi^2) / phi, pooled over the
    # inside neighbours of each cell of the outside ring.
    num, den = np.zeros(phi.shape), np.zeros(phi.shape)
    for shift in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        num += np.roll(np.where(inside, u + phi * phi, 0.0), shift, axis=(0, 1))
        den += np.roll(np.where(inside, phi, 0.0), shift, axis=(0, 1))
    ring = ~inside & (den > 0)
    slope = np.where(ring, num / np.where(ring, den, 1.0), 0.0)
    if ring.any():
        _, (nr, nc) = ndimage.distance_transform_edt(~ring, return_indices=True)
        slope = slope[nr, nc]
    u[~inside] = np.maximum(slope[~inside], 1.0) * phi[~inside]
    return u


# ---------------------------------------------------------------------------- mesh


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
    colours = vertex_colours(rgba, mask, px, py, blur_px=0.5 * cell)
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


def vertex_colours(
    rgba: np.ndarray, mask: np.ndarray, px: np.ndarray, py: np.ndarray, *, blur_px: float = 0.0
) -> np.ndarray:
    """(N, 4) uint8: the picture's colour under each vertex at picture point (px, py).

    Pixels at the outline are anti-aliased blends with the background, so the picture
    is first extended outward from a slightly eroded subject (nearest inside colour):
    the background never tints the rim. Blurring by about half a grid cell before the
    bilinear lookup keeps fine detail from aliasing into speckled vertex colours.
    """
    from scipy import ndimage

    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    m = int(np.ceil(3 * blur_px)) + 4
    r0, r1 = max(rows.min() - m, 0), min(rows.max() + 1 + m, h)
    c0, c1 = max(cols.min() - m, 0), min(cols.max() + 1 + m, w)
    sub = mask[r0:r1, c0:c1]
    solid = ndimage.binary_erosion(sub, iterations=max(1, round(max(h, w) / 256)))
    if solid.sum() < MIN_FOREGROUND_PX:
        solid = sub
    _, (nr, nc) = ndimage.distance_transform_edt(~solid, return_indices=True)
    rgb = rgba[r0:r1, c0:c1, :3][nr, nc].astype(np.float32)
    if blur_px > 0.5:
        rgb = ndimage.gaussian_filter(rgb, (blur_px, blur_px, 0))
    at = [py - 0.5 - r0, px - 0.5 - c0]  # pixel centres sit at k + 0.5
    out = np.empty((len(px), 4), dtype=np.uint8)
    for ch in range(3):
        out[:, ch] = np.clip(
            ndimage.map_coordinates(rgb[..., ch], at, order=1, mode="nearest") + 0.5, 0, 255
        )
    out[:, 3] = 255
    return out


# ---------------------------------------------------------------------------- adapter


class InflateAdapter(Adapter):
    """Nothing to load and no device to hold: it runs anywhere, as the demo's default."""

    tasks = ("mesh",)
    accepts = ("image",)
    images_used = 1  # the first picture
    Params = InflateParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        if not item.images:
            raise InputError("builtin-inflate needs an image; it cannot use a text prompt alone")
        params = InflateParams.model_validate(item.params)
        name = item.image_names[0] if item.image_names else "image"
        t0 = time.perf_counter()
        rgba = decode_rgba(item.images[0], name=name)
        mesh, info = inflate(rgba, params)
        info["seconds"]["total"] = round(time.perf_counter() - t0, 4)
        return Result(mesh=mesh, info=info)
