"""Edges of a triangle mesh as numbers: one key per edge, the same for both of its faces
whichever way round they hold it, so that counting and matching edges is a sort of
integers (``np.unique`` on rows of pairs is far slower)."""

from __future__ import annotations

import numpy as np


def edge_keys(tris: np.ndarray, n_points: int) -> np.ndarray:
    """(F, 3) int64: one number per edge of each face (edge j runs from corner j to
    j + 1), the same for both of its faces whichever way round they hold it."""
    ahead = tris[:, [1, 2, 0]]
    return np.minimum(tris, ahead) * np.int64(n_points) + np.maximum(tris, ahead)


def edge_table(tris: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique edges (E, 2) sorted within, each face side's edge (F, 3), uses per edge)."""
    keys, inv, counts = np.unique(
        edge_keys(tris, n_points), return_inverse=True, return_counts=True
    )
    return np.column_stack([keys // n_points, keys % n_points]), inv.reshape(-1, 3), counts


def edge_uses(tris: np.ndarray, n_points: int) -> np.ndarray:
    """How many faces use each distinct edge (in the order of the edges' keys)."""
    return np.unique(edge_keys(tris, n_points), return_counts=True)[1]


def vertex_components(n_points: int, tris: np.ndarray) -> tuple[int, np.ndarray]:
    """(count, label per point) of the pieces that edges connect; unused points are
    pieces of their own."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]]])
    graph = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_points, n_points))
    count, labels = connected_components(graph, directed=False)
    return count, labels
