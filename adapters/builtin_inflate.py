"""builtin-inflate: image to mesh on the CPU by inflating the picture's silhouette.

The pipeline, each step a function over numpy arrays:

1. ``foreground_mask``: from alpha when the picture has transparency, else from the
   border colour (background = pixels of that colour connected to the border; enclosed
   background-coloured regions stay holes when large, get filled when they are specks).
2. ``signed_distance``: the silhouette's signed distance in pixels (positive inside),
   sampled onto a coarser grid so the outline keeps sub-cell accuracy.
3. ``balloon``: a Poisson solve lap(u) = -2 inside the outline with u = 0 exactly on it
   (ghost-fluid boundary). sqrt(u) is a circular cross-section for a tube of any width,
   so thin limbs come out round and large blobs come out domed.
4. ``inflate_mesh``: marching cubes on f(x, y, z) = depth^2 u(x, y) - z^2 (front and back
   mirrored), a closed watertight surface, coloured from the picture, placed in the glTF
   frame of DESIGN.md: picture x to +X, picture up to +Y, front to +Z, centred, longest
   side 1.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.base import Adapter, InputError, Item, Result
from storage.pictures import decode_rgba

ALPHA_CUT = 128
MIN_FOREGROUND_PX = 16


class InflateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(128, ge=32, le=512, description="grid cells along the longest side")
    depth: float = Field(1.0, ge=0.1, le=3.0, description="thickness factor; 1 is round")


# ---------------------------------------------------------------------------- mask


def foreground_mask(rgba: np.ndarray, *, tolerance: float = 40.0) -> np.ndarray:
    """Which pixels are the subject. Raises InputError when there is none to find."""

    alpha = rgba[..., 3]
    if alpha.min() < ALPHA_CUT:
        mask = alpha >= ALPHA_CUT
        if not mask.any():
            raise InputError("picture is fully transparent: no foreground to inflate")
    else:
        mask = _mask_from_border_colour(rgba[..., :3], tolerance)
    mask = _drop_specks(mask)
    if mask.sum() < MIN_FOREGROUND_PX:
        raise InputError(f"foreground is too small to inflate ({int(mask.sum())} pixels)")
    return mask | _small_holes(mask)


def _mask_from_border_colour(rgb: np.ndarray, tolerance: float) -> np.ndarray:
    from scipy import ndimage

    h, w, _ = rgb.shape
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    bg = np.median(border, axis=0)
    border_dist = np.linalg.norm(border - bg, axis=1)
    if np.mean(border_dist <= tolerance) < 0.6:
        raise InputError(
            "cannot tell the subject from the background: the picture's border is not one flat"
            " colour; use a PNG with a transparent background"
        )
    dist = np.linalg.norm(rgb.astype(np.float32) - bg, axis=2)
    bg_like = dist <= tolerance
    labels, n = ndimage.label(bg_like)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, edge_labels[edge_labels > 0])
    mask = ~background
    if not mask.any():
        raise InputError("picture has no foreground: every pixel matches the background colour")
    if mask.mean() > 0.98:
        raise InputError("the subject fills the whole picture: no background to cut it from")
    # Enclosed background-like regions: a real hole shows the background itself (nearly
    # exact colour) and is not tiny; a highlight or an off-white spot is only near it.
    index = np.arange(1, n + 1)
    sizes = ndimage.sum(bg_like, labels, index=index)
    closeness = ndimage.median(dist, labels, index=index)
    hole_min = max(64.0, 0.002 * h * w)
    for lab in range(1, n + 1):
        if lab in edge_labels:
            continue
        if sizes[lab - 1] >= hole_min and closeness[lab - 1] <= tolerance / 4:
            mask[labels == lab] = False
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


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the outline in pixels, positive inside (outline halfway between pixels)."""
    from scipy import ndimage

    inside = ndimage.distance_transform_edt(mask) - 0.5
    outside = ndimage.distance_transform_edt(~mask) - 0.5
    return np.where(mask, inside, -outside).astype(np.float32)


def balloon(phi: np.ndarray) -> np.ndarray:
    """Solve lap(u) = -2 where phi > 0, u = 0 on phi = 0 (cell units), u < 0 outside.

    Dirichlet at the exact outline (not at cell centres) through ghost values: an edge
    from an inside cell to an outside one is cut at theta = phi_in / (phi_in - phi_out),
    so the stencil sees 0 at distance theta. Outside cells next to the outline get the
    same ghost values, so marching cubes puts the silhouette where phi says.
    """
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    inside = phi > 0
    idx = np.full(phi.shape, -1, dtype=np.int64)
    n = int(inside.sum())
    idx[inside] = np.arange(n)
    diag = np.zeros(n)
    rows, cols = [], []
    ghost_sum = np.zeros(phi.shape)
    ghost_cnt = np.zeros(phi.shape)
    ii, jj = np.nonzero(inside)
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ni, nj = ii + di, jj + dj  # grids are padded: neighbours are in range
        nb_in = inside[ni, nj]
        rows.append(idx[ii[nb_in], jj[nb_in]])
        cols.append(idx[ni[nb_in], nj[nb_in]])
        diag[idx[ii[nb_in], jj[nb_in]]] += 1.0
        out = ~nb_in
        pin, pout = phi[ii[out], jj[out]], phi[ni[out], nj[out]]
        theta = np.clip(pin / (pin - pout), 0.05, 1.0)
        np.add.at(diag, idx[ii[out], jj[out]], 1.0 / theta)
        # remember theta per outside neighbour to extrapolate u there afterwards
        np.add.at(ghost_sum, (ni[out], nj[out]), -(1.0 - theta) / theta)
        np.add.at(ghost_cnt, (ni[out], nj[out]), 1.0)
    rows_a = np.concatenate(rows)
    cols_a = np.concatenate(cols)
    a = sparse.csr_matrix(
        (
            np.concatenate([-np.ones(len(rows_a)), diag]),
            (np.concatenate([rows_a, np.arange(n)]), np.concatenate([cols_a, np.arange(n)])),
        ),
        shape=(n, n),
    )
    sol = spsolve(a.tocsc(), np.full(n, 2.0))
    u = np.full(phi.shape, -1.0)
    u[inside] = sol
    # Ghost values outside: u_out = -u_in (1 - theta) / theta, averaged over inside neighbours.
    near = ghost_cnt > 0
    nb_u = np.zeros(phi.shape)
    nb_n = np.zeros(phi.shape)
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        shifted = np.roll(np.where(inside, u, 0.0), (di, dj), axis=(0, 1))
        shifted_in = np.roll(inside, (di, dj), axis=(0, 1))
        nb_u += shifted
        nb_n += shifted_in
    mean_in = np.divide(nb_u, nb_n, out=np.zeros_like(nb_u), where=nb_n > 0)
    ghost = mean_in * ghost_sum / np.maximum(ghost_cnt, 1)
    u[near] = np.minimum(ghost[near], -1e-6)
    far_value = -max(float(sol.max()) if n else 1.0, 1.0)
    u[~inside & ~near] = far_value
    return u


# ---------------------------------------------------------------------------- mesh


def inflate_mesh(rgba: np.ndarray, *, resolution: int = 128, depth: float = 1.0) -> Any:
    """The whole backend on one decoded picture: a coloured, watertight trimesh."""
    import trimesh
    from scipy import ndimage
    from skimage.measure import marching_cubes

    mask = foreground_mask(rgba)
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    longest = max(r1 - r0, c1 - c0)
    cell = longest / resolution  # picture pixels per grid cell
    margin = int(np.ceil(3 * cell)) + 2
    crop_r0, crop_c0 = max(r0 - margin, 0), max(c0 - margin, 0)
    crop = np.zeros((r1 - r0 + 2 * margin, c1 - c0 + 2 * margin), dtype=bool)
    sub = mask[crop_r0 : r1 + margin, crop_c0 : c1 + margin]
    off_r, off_c = crop_r0 - (r0 - margin), crop_c0 - (c0 - margin)
    crop[off_r : off_r + sub.shape[0], off_c : off_c + sub.shape[1]] = sub
    phi_px = signed_distance(crop)

    pad = 2
    ny = int(np.ceil((r1 - r0) / cell)) + 2 * pad
    nx = int(np.ceil((c1 - c0) / cell)) + 2 * pad
    # Cell centres in crop pixel coordinates (pixel k spans [k, k + 1]).
    ys = margin + (np.arange(ny) - pad + 0.5) * cell
    xs = margin + (np.arange(nx) - pad + 0.5) * cell
    gy, gx = np.meshgrid(ys - 0.5, xs - 0.5, indexing="ij")
    phi = ndimage.map_coordinates(phi_px, [gy, gx], order=1, mode="nearest") / cell
    phi[:pad], phi[-pad:], phi[:, :pad], phi[:, -pad:] = -1.0, -1.0, -1.0, -1.0
    if (phi > 0).sum() < 4:
        raise InputError("foreground is too thin to inflate at this resolution")

    u = balloon(phi)
    d2 = depth * depth
    top = int(np.ceil(np.sqrt(max(u.max(), 0.0) * d2))) + 2
    z = np.arange(-top, top + 1, dtype=np.float32)
    volume = (d2 * u.astype(np.float32))[:, :, None] - (z * z)[None, None, :]
    volume = np.pad(volume, 1, constant_values=-1.0)
    verts, faces, _normals, _ = marching_cubes(volume, level=0.0, allow_degenerate=False)
    verts -= 1.0  # undo the padding
    if len(faces) == 0:
        raise InputError("foreground is too thin to inflate at this resolution")

    # Grid index -> picture pixel coordinates -> glTF frame.
    px = c0 + (verts[:, 1] - pad + 0.5) * cell
    py = r0 + (verts[:, 0] - pad + 0.5) * cell
    pz = (verts[:, 2] - top) * cell
    xyz = np.column_stack([px, -py, pz])
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    xyz = (xyz - (lo + hi) / 2) / float((hi - lo).max())

    colours = _vertex_colours(rgba, mask, py, px)
    mesh = trimesh.Trimesh(xyz, faces[:, ::-1], vertex_colors=colours, process=True)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _vertex_colours(
    rgba: np.ndarray, mask: np.ndarray, py: np.ndarray, px: np.ndarray
) -> np.ndarray:
    """The picture's colour under each vertex. Pixels at the outline are anti-aliased
    blends with the background, so rim vertices take the colour of the nearest pixel a
    little inside it: the background never tints the mesh."""
    from scipy import ndimage

    h, w = mask.shape
    inset = max(1, round(max(h, w) / 256))
    solid = ndimage.binary_erosion(mask, iterations=inset)
    if solid.sum() < MIN_FOREGROUND_PX:
        solid = mask
    r = np.clip(np.floor(py).astype(np.int64), 0, h - 1)
    c = np.clip(np.floor(px).astype(np.int64), 0, w - 1)
    outside = ~solid[r, c]
    if outside.any():
        _, (nr, nc) = ndimage.distance_transform_edt(~solid, return_indices=True)
        r[outside], c[outside] = nr[r[outside], c[outside]], nc[r[outside], c[outside]]
    rgb = rgba[r, c, :3]
    return np.column_stack([rgb, np.full(len(rgb), 255, dtype=np.uint8)])


# ---------------------------------------------------------------------------- adapter


class InflateAdapter(Adapter):
    tasks = ("mesh",)
    accepts = ("image",)
    Params = InflateParams
    version = "1"

    def run_batch(self, items: list[Item]) -> list[Result | BaseException]:
        out: list[Result | BaseException] = []
        for item in items:
            try:
                out.append(self._one(item))
            except Exception as exc:  # noqa: BLE001 - one bad picture spoils only its slot
                out.append(exc)
        return out

    def _one(self, item: Item) -> Result:
        if not item.images:
            raise InputError("builtin-inflate needs an image; it cannot use a text prompt alone")
        params = InflateParams.model_validate(item.params)
        name = item.image_names[0] if item.image_names else "image"
        t0 = time.perf_counter()
        rgba = decode_rgba(item.images[0], name=f"image {name!r}")
        mesh = inflate_mesh(rgba, resolution=params.resolution, depth=params.depth)
        return Result(
            mesh=mesh,
            info={
                "picture_px": [int(rgba.shape[1]), int(rgba.shape[0])],
                "seconds": round(time.perf_counter() - t0, 4),
            },
        )
