"""Barycentric weights, two ways for two jobs.

``barycentric`` places arbitrary points (closest points on a surface, in 3D) in their
triangles, robust to degenerate ones. ``pixel_barycentric`` places pixel centres in the
triangles a rasteriser found under them: millions per picture, so each triangle's
weights are written once as an affine function of the pixel and gathered per pixel, in
float32. The two round differently, and each caller's outputs depend on its own.
"""

from __future__ import annotations

import numpy as np


def barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N, 3) weights of points ``p`` in triangles (a, b, c); degenerate ones -> corner a."""
    v0, v1, v2 = b - a, c - a, p - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    den = d00 * d11 - d01 * d01
    ok = np.abs(den) > 1e-30
    safe = np.where(ok, den, 1.0)
    w1 = np.where(ok, (d11 * d20 - d01 * d21) / safe, 0.0)
    w2 = np.where(ok, (d00 * d21 - d01 * d20) / safe, 0.0)
    weights = np.column_stack([1.0 - w1 - w2, w1, w2])
    return np.clip(weights, 0.0, 1.0) / np.clip(weights, 0.0, 1.0).sum(axis=1, keepdims=True)


def pixel_barycentric(
    xy: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """(P, 3) float32 weights of pixel centres (rows, cols) in their triangles ``face_ids``
    (``xy``: the vertices' pixel coordinates), clipped to [0, 1].

    Each face's weights are an affine function of the pixel position; its six
    coefficients are gathered once per pixel instead of the triangle's corners.
    """
    t = xy.astype(np.float64)[faces]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    inv = 1.0 / np.where(np.abs(det) > 1e-12, det, 1e-12)
    x0, y0 = t[:, 0, 0], t[:, 0, 1]
    # b1 = ((x - x0) e2y - (y - y0) e2x) / det, b2 = ((y - y0) e1x - (x - x0) e1y) / det
    coef = np.column_stack(
        [
            e2[:, 1] * inv,
            -e2[:, 0] * inv,
            (y0 * e2[:, 0] - x0 * e2[:, 1]) * inv,
            -e1[:, 1] * inv,
            e1[:, 0] * inv,
            (x0 * e1[:, 1] - y0 * e1[:, 0]) * inv,
        ]
    ).astype(np.float32)[face_ids]
    x = cols.astype(np.float32) + 0.5
    y = rows.astype(np.float32) + 0.5
    b1 = coef[:, 0] * x + coef[:, 1] * y + coef[:, 2]
    b2 = coef[:, 3] * x + coef[:, 4] * y + coef[:, 5]
    return np.clip(np.column_stack([1.0 - b1 - b2, b1, b2]), 0.0, 1.0)
