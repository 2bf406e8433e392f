"""Surface bookkeeping the mesh backends share: joining coincident corners, and one
key per edge so that the two faces of an edge find each other."""

from __future__ import annotations

import numpy as np


def weld(
    vertices: np.ndarray, faces: np.ndarray, *, bits: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Join corners that fall in one cell of a 2^``bits`` grid over the longest side (UV
    seams, normals and STL soups split them): (points, the triangles over them, each input
    vertex's point, which input faces those triangles are). Triangles that collapse (two
    corners joined) are left out."""
    if not 1 <= bits <= 21:
        raise ValueError("bits: 1 to 21 (three coordinates packed into one int64)")
    v = np.asarray(vertices, np.float64)
    scale = max(float(np.ptp(v, axis=0).max()), 1e-300)
    cell = np.round((v - v.min(axis=0)) / scale * (2**bits - 1)).astype(np.int64)
    key = (cell[:, 0] << 42) | (cell[:, 1] << 21) | cell[:, 2]
    _, first, index = np.unique(key, return_index=True, return_inverse=True)
    index = index.reshape(-1)
    tris = index[np.asarray(faces, np.int64).reshape(-1, 3)]
    good = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 2] != tris[:, 0])
    kept = np.flatnonzero(good)
    return v[first], tris[kept], index, kept


def edge_keys(tris: np.ndarray, n_points: int) -> np.ndarray:
    """(F, 3) int64: one number per edge of each face (edge j runs from corner j to
    j + 1), the same for both of its faces whichever way round they hold it."""
    ends = np.sort(np.stack([tris, np.roll(tris, -1, axis=1)], axis=2), axis=2)
    return ends[..., 0] * np.int64(n_points) + ends[..., 1]
