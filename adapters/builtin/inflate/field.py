"""The fields builtin-inflate's surface is made of: the outline's signed distance and
the balloon, a Poisson solve whose square root is a round cross-section of any width."""

from __future__ import annotations

import numpy as np


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
