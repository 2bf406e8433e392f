"""builtin-parts' dual graph: one node per face, one edge per mesh edge two faces share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CONCAVE = 0.2  # 1 - cos(dihedral) over which a concave crease's affinity falls by e
CONVEX_SHARE = 0.05  # convex creases count this much of a concave one (Katz and Tal: 0.1-0.2)
SHELL_SHARE = 0.01  # a separate shell under this share of the area is no part by itself
SEED = 0  # every random choice of the backend: the same mesh always gives the same parts


@dataclass
class FaceGraph:
    """The dual graph: one node per face, one edge per mesh edge shared by two faces."""

    centroids: np.ndarray  # (F, 3)
    normals: np.ndarray  # (F, 3)
    areas: np.ndarray  # (F,)
    pairs: np.ndarray  # (E, 2) faces either side
    length: np.ndarray  # (E,) shared edge length
    span: np.ndarray  # (E,) centroid to edge midpoint to centroid
    bend: np.ndarray  # (E,) 1 - cos(dihedral angle)
    convex: np.ndarray  # (E,) bool

    @property
    def n(self) -> int:
        return len(self.areas)

    def crease(self) -> np.ndarray:
        """Per edge, the factor (0-1] by which its crease damps affinity."""
        share = np.where(self.convex, CONVEX_SHARE, 1.0)
        return np.exp(-share * self.bend / CONCAVE)


def face_graph(points: np.ndarray, tris: np.ndarray) -> FaceGraph:
    """The dual graph of a triangle mesh (points already welded)."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    cross = np.cross(b - a, c - a)
    double = np.linalg.norm(cross, axis=1)
    normals = cross / np.maximum(double, 1e-300)[:, None]
    centroids = (a + b + c) / 3.0
    # Each face's edges as sorted vertex pairs; equal pairs side by side once sorted.
    ends = np.sort(np.stack([tris, np.roll(tris, -1, axis=1)], axis=2), axis=2).reshape(-1, 2)
    key = ends[:, 0] * np.int64(len(points)) + ends[:, 1]
    order = np.argsort(key, kind="stable")
    k = key[order]
    # Faces on one edge are neighbours in that order; an edge of three or more faces
    # (non-manifold) chains them, so that no face is cut off from the rest.
    first = np.flatnonzero(k[1:] == k[:-1])
    fi, fj = order[first] // 3, order[first + 1] // 3
    edge = ends[order[first]]
    pairs = np.column_stack([fi, fj]).astype(np.int64)
    mid = points[edge].mean(axis=1)
    span = np.linalg.norm(centroids[fi] - mid, axis=1) + np.linalg.norm(centroids[fj] - mid, axis=1)
    # Convex when the far corner of one face lies below the other's plane.
    far = tris[fj].sum(axis=1) - edge.sum(axis=1)
    rise = np.einsum("ij,ij->i", normals[fi], points[far] - points[edge[:, 0]])
    cos = np.clip(np.einsum("ij,ij->i", normals[fi], normals[fj]), -1.0, 1.0)
    return FaceGraph(
        centroids=centroids,
        normals=normals,
        areas=0.5 * double,
        pairs=pairs,
        length=np.linalg.norm(points[edge[:, 0]] - points[edge[:, 1]], axis=1),
        span=np.maximum(span, 1e-12),
        bend=1.0 - cos,
        convex=rise <= 0,
    )


def subgraph(graph: FaceGraph, keep: np.ndarray) -> tuple[FaceGraph, np.ndarray]:
    """(the graph of the faces where ``keep``, which of the edges it kept)."""
    index = np.cumsum(keep) - 1
    edges = keep[graph.pairs[:, 0]] & keep[graph.pairs[:, 1]]
    sub = FaceGraph(
        centroids=graph.centroids[keep],
        normals=graph.normals[keep],
        areas=graph.areas[keep],
        pairs=index[graph.pairs[edges]],
        length=graph.length[edges],
        span=graph.span[edges],
        bend=graph.bend[edges],
        convex=graph.convex[edges],
    )
    return sub, edges


def main_shells(graph: FaceGraph) -> np.ndarray:
    """Per face, whether its connected shell is worth splitting: at least SHELL_SHARE of
    the area. Crumbs (loose bolts, specks of scan noise) would each take an eigenvalue
    and a part; they join the nearest part instead. When crumbs are most of the
    surface (voxel art: every cube its own shell), all shells count."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    n = graph.n
    adj = sparse.csr_matrix(
        (np.ones(len(graph.pairs)), (graph.pairs[:, 0], graph.pairs[:, 1])), shape=(n, n)
    )
    _, comp = connected_components(adj, directed=False)
    area = np.bincount(comp, weights=graph.areas)
    big = area >= SHELL_SHARE * area.sum()
    if area[big].sum() < 0.5 * area.sum():
        return np.ones(n, bool)
    return big[comp]


def adjacency(n: int, pairs: np.ndarray, weights: np.ndarray) -> Any:
    from scipy import sparse

    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return sparse.csr_matrix((np.concatenate([weights, weights]), (rows, cols)), shape=(n, n))
