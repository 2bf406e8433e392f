"""Faces wound one way, outward: a few flipped faces, or a shell inside out, turn convex
edges concave and normals inward for anything that reads the surface's shape."""

from __future__ import annotations

import numpy as np

from geometry.edges import edge_table


def orient(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Faces wound consistently within each connected piece, outward. A closed piece goes
    by the sign of its volume; an open one keeps the winding most of its faces had. A
    mesh wound consistently already (each edge run once each way) is only checked for
    being inside out. ``points`` must be welded (``geometry.weld``)."""
    n = np.int64(len(points))
    run = np.sort((tris * n + np.roll(tris, -1, axis=1)).ravel())  # edge u -> v as u n + v
    if not (run[1:] == run[:-1]).any():
        back = (run % n) * n + run // n  # v -> u
        at = np.minimum(np.searchsorted(run, back), len(run) - 1)
        if (run[at] == back).all():  # closed: the volume's sign says which way is out
            a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
            if np.einsum("ij,ij->", a, np.cross(b, c)) < 0:
                return tris[:, ::-1].copy()
        return tris
    import igl

    fixed, comp = igl.bfs_orient(np.ascontiguousarray(tris, np.int64))
    fixed, comp = np.asarray(fixed, np.int64), np.asarray(comp, np.int64)
    flipped = ~(fixed == tris).all(axis=1)
    pieces = int(comp.max()) + 1
    undo = np.bincount(comp, weights=flipped, minlength=pieces) > 0.5 * np.bincount(
        comp, minlength=pieces
    )
    _, where, uses = edge_table(fixed, len(points))
    open_face = (uses[where] != 2).any(axis=1)
    closed = np.bincount(comp, weights=open_face, minlength=pieces) == 0
    a, b, c = points[fixed[:, 0]], points[fixed[:, 1]], points[fixed[:, 2]]
    volume = np.bincount(comp, weights=np.einsum("ij,ij->i", a, np.cross(b, c)), minlength=pieces)
    undo = np.where(closed, volume < 0, undo)
    return np.where(undo[comp][:, None], fixed[:, ::-1], fixed)
