"""Proxies: a copy of a mesh of bounded size and edge length for a backend to work on.

The parts and rig backends find what they find on a proxy, not on the input: a dense
input makes their solves slow, a coarse one (slivers spanning a limb) leaves them
nowhere to cut. They ask different things of the copy, so there are two recipes made
of the same steps (decimate when dense, cut long edges, drop what has no area):

- ``even_proxy`` (parts): about N faces, all well shaped, long edges halved and the
  surplus collapsed back; it remembers the input face each proxy face lies in.
- ``bounded_proxy`` (rig): at most N faces and no edge over twice the even tiling's,
  long edges cut into ladders; undecimated, the input points keep their indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.edges import edge_uses, vertex_components
from geometry.measures import face_areas
from geometry.split import cut_long_edges, halve_long_edges
from geometry.weld import grid_keys, weld


def tiling_edge(area: float, faces: int) -> float:
    """The edge of the equilateral triangles that tile ``area`` with ``faces`` of them."""
    return float(np.sqrt(4.0 * area / (np.sqrt(3.0) * faces)))


@dataclass
class Proxy:
    """An even proxy and how its faces map to the input's."""

    points: np.ndarray
    tris: np.ndarray
    edge: float  # the edge length of the proxy's triangles, about
    parent: np.ndarray | None  # input face of each proxy face when split, else None
    decimated: bool


def even_proxy(points: np.ndarray, tris: np.ndarray, *, target_faces: int) -> Proxy:
    """A copy of about ``target_faces`` well-shaped faces (``points`` welded).

    A dense input is decimated (fast_simplification). Long edges are then split until
    none is over three times the edge of an even tiling (a sliver spanning a limb leaves
    nowhere to cut it, a box of twelve triangles nowhere at all), and when that made
    many faces, shortest-edge collapse (libigl) brings them back to the target: it
    leaves well-shaped triangles, though a sharp crease gets a chamfer about one proxy
    edge wide (two bends of half the angle).
    """
    area = float(face_areas(points, tris).sum())
    edge = tiling_edge(area, target_faces)
    decimated = False
    if len(tris) > 1.5 * target_faces:
        import fast_simplification

        p, t = fast_simplification.simplify(points, tris, target_count=target_faces)
        points, tris = _weld(p, np.asarray(t, np.int64))
        decimated = True
    points, tris, parent = halve_long_edges(points, tris, 3.0 * edge, budget=40 * target_faces)
    if len(tris) > 1.5 * target_faces:
        points, tris = _weld(*_collapse(points, tris, target_faces))
        decimated = True
    if decimated:  # collapses can leave flat slivers of no area: no surface, no node
        tris = tris[face_areas(points, tris) > 1e-9 * area / len(tris)]
    return Proxy(points, tris, edge, None if decimated else parent, decimated)


def _weld(points: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What decimation left, joined again at its corners (within 2^-21 of its size)."""
    points, tris, _, _ = weld(points, tris, grid_keys(points, 21), drop_repeats=True)
    return points, tris


def _collapse(points: np.ndarray, tris: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Shortest-edge collapse (libigl) where the surface is edge-manifold, as it needs;
    else, or when it stops far from the target, quadric decimation."""
    import fast_simplification

    if edge_uses(tris, len(points)).max() <= 2:
        import igl

        p, t, _, _ = igl.decimate(points, tris.astype(np.int32), target)
        if 0.5 * target <= len(t) <= 1.5 * target:
            return np.asarray(p, np.float64), np.asarray(t, np.int64)
    p, t = fast_simplification.simplify(points, tris, target_count=target)
    return np.asarray(p, np.float64), np.asarray(t, np.int64)


def bounded_proxy(
    points: np.ndarray, tris: np.ndarray, *, target_faces: int
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """(points, triangles, edge limit, decimated): at most about ``target_faces`` faces,
    none with an edge over the limit, twice the edge of an even tiling.

    A large input is decimated (fast_simplification), keeping its largest connected
    piece (decimation may leave crumbs). Without decimation the input points keep their
    indices (new ones are appended), so values computed on the proxy come back to them
    exactly.
    """
    area = face_areas(points, tris).sum()
    max_len = 2.0 * tiling_edge(area, target_faces)
    decimated = len(tris) > target_faces
    if decimated:
        import fast_simplification

        points, tris = fast_simplification.simplify(
            points, tris, target_reduction=1.0 - target_faces / len(tris)
        )
        tris = np.asarray(tris, np.int64)
        _, labels = vertex_components(len(points), tris)
        keep = labels[tris[:, 0]] == np.bincount(labels[tris[:, 0]]).argmax()
        tris = tris[keep]
    points, tris = cut_long_edges(points, tris, max_len)
    # Flat triangles (decimation can leave some) have no cotangents: a Laplacian skips them.
    tris = tris[face_areas(points, tris) > 1e-12 * max_len**2]
    return points, tris, max_len, decimated
