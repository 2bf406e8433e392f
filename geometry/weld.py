"""Corners at one position joined into one vertex.

UV seams, per-face normals and STL's triangle soups split a surface's corners into
several vertices at one position; a backend that walks the surface as a graph (parts,
rig, decimation) must join them first. What counts as "one position" depends on the
reader, so the tolerance is a key per vertex that ``weld`` joins on:
``grid_keys`` (a grid over the longest side: relative, for shapes of any size),
``rounded_keys`` (trimesh's merge tolerance: absolute, as trimesh itself merges), and
``position_ids`` (exactly equal coordinates, for checks that must not snap).
"""

from __future__ import annotations

import numpy as np


def grid_keys(vertices: np.ndarray, bits: int = 20) -> np.ndarray:
    """(N,) int64: the cell of a 2^``bits`` grid over the longest side each vertex is in."""
    if not 1 <= bits <= 21:
        raise ValueError("bits: 1 to 21 (three coordinates packed into one int64)")
    v = np.asarray(vertices, np.float64)
    scale = max(float(np.ptp(v, axis=0).max()), 1e-300)
    cell = np.round((v - v.min(axis=0)) / scale * (2**bits - 1)).astype(np.int64)
    return (cell[:, 0] << 42) | (cell[:, 1] << 21) | cell[:, 2]


def rounded_keys(vertices: np.ndarray) -> np.ndarray:
    """(N,) one key per vertex, equal where trimesh's ``merge_vertices`` would merge
    (coordinates rounded to its merge tolerance)."""
    from trimesh import grouping, tol, util

    return grouping.hashable_rows(np.asarray(vertices), digits=util.decimal_to_digits(tol.merge))


def position_ids(vertices: np.ndarray) -> np.ndarray:
    """(N,) int64: the same number for vertices at exactly the same position."""
    return np.unique(vertices, axis=0, return_inverse=True)[1].reshape(-1)


def weld(
    vertices: np.ndarray, faces: np.ndarray, keys: np.ndarray, *, drop_repeats: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertices of equal ``keys`` joined: (points, the triangles over them, each input
    vertex's point, which input faces those triangles are).

    Triangles that collapse (two corners joined) are left out, and with
    ``drop_repeats`` so are repeats of a triangle (the same three points): a surface
    graph has no use for either.
    """
    v = np.asarray(vertices, np.float64)
    _, first, index = np.unique(keys, return_index=True, return_inverse=True)
    index = index.reshape(-1)
    tris = index[np.asarray(faces, np.int64).reshape(-1, 3)]
    good = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 2] != tris[:, 0])
    kept = np.flatnonzero(good)
    tris = tris[kept]
    if drop_repeats:
        keep = ~repeated_faces(tris)
        tris, kept = tris[keep], kept[keep]
    return v[first], tris, index, kept


def repeated_faces(tris: np.ndarray) -> np.ndarray:
    """(F,) bool: faces on the same three points as an earlier one (in hash order)."""
    # Equal corner sets, found side by side when sorted by a hash of them.
    corners = np.sort(tris, axis=1).astype(np.uint64)
    with np.errstate(over="ignore"):
        mix = (
            (corners[:, 0] * np.uint64(0x9E3779B97F4A7C15))
            ^ (corners[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F))
            ^ (corners[:, 2] * np.uint64(0x165667B19E3779F9))
        )
    order = np.argsort(mix, kind="stable")
    again = (corners[order[1:]] == corners[order[:-1]]).all(axis=1)
    repeat = np.zeros(len(tris), bool)
    repeat[order[1:][again]] = True
    return repeat
