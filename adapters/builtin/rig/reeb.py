"""builtin-rig's Reeb tree: the bands of geodesic distance from the root ring, split into
connected pieces (rings on a limb) and joined into a tree, pruned of bumps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.edges import edge_table
from geometry.measures import face_areas

SPUR_RADII = 1.0  # branches shorter than this many ring radii where they start are bumps


@dataclass
class ReebTree:
    """Pieces of the distance bands, as a tree; node ``len(band)`` is the root."""

    label: np.ndarray  # (N,) piece of each point, -1 where the distance never reached
    band: np.ndarray  # (K,)
    centre: np.ndarray  # (K + 1, 3), the root's last
    radius: np.ndarray  # (K + 1,)
    parent: np.ndarray  # (K + 1,), -1 for the root


def reeb_tree(
    points: np.ndarray,
    tris: np.ndarray,
    seeds: np.ndarray,
    band_width: float,
    root: np.ndarray,
) -> ReebTree:
    """Split the geodesic distance from ``seeds`` into bands of ``band_width`` and each
    band into connected pieces; a piece's parent is the piece below it it touches most.

    Graph distance along edges stands in for geodesic distance: with edges much shorter
    than a band, its zig-zag error only tilts the rings a little.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components, dijkstra

    n = len(points)
    edges = edge_table(tris, n)[0]
    e0, e1 = edges[:, 0], edges[:, 1]
    length = np.linalg.norm(points[e0] - points[e1], axis=1)
    graph = sparse.coo_matrix((length, (e0, e1)), shape=(n, n)).tocsr()
    dist = dijkstra(graph, directed=False, indices=seeds, min_only=True)
    reach = np.isfinite(dist)
    band = np.where(reach, np.floor(np.where(reach, dist, 0.0) / band_width), -1).astype(np.int64)
    same = reach[e0] & (band[e0] == band[e1])
    within = sparse.coo_matrix((np.ones(int(same.sum())), (e0[same], e1[same])), shape=(n, n))
    _, comp = connected_components(within, directed=False)
    label = np.full(n, -1, dtype=np.int64)
    _, label[reach] = np.unique(comp[reach], return_inverse=True)
    k = int(label.max()) + 1
    node_band = np.zeros(k, dtype=np.int64)
    node_band[label[reach]] = band[reach]

    mass = np.zeros(n)
    np.add.at(mass, tris, np.repeat(face_areas(points, tris)[:, None] / 3.0, 3, axis=1))
    mass = np.maximum(mass, 1e-30)
    lab, m = label[reach], mass[reach]
    total = np.bincount(lab, weights=m, minlength=k)
    centre = np.column_stack(
        [np.bincount(lab, weights=m * points[reach, i], minlength=k) / total for i in range(3)]
    )
    spread = np.linalg.norm(points[reach] - centre[lab], axis=1)
    radius = np.bincount(lab, weights=m * spread, minlength=k) / total

    # Parents: among the pieces of lower bands a piece touches, the nearest band first,
    # then the one it shares the most edges with.
    cross = reach[e0] & reach[e1] & (band[e0] != band[e1])
    a, b = label[e0[cross]], label[e1[cross]]
    up = node_band[a] > node_band[b]
    child, lower = np.where(up, a, b), np.where(up, b, a)
    pairs, counts = np.unique(child * k + lower, return_counts=True)
    child, lower = pairs // k, pairs % k
    order = np.lexsort((-counts, -node_band[lower], child))
    child, lower = child[order], lower[order]
    first = np.ones(len(child), dtype=bool)
    first[1:] = child[1:] != child[:-1]
    parent = np.full(k + 1, k, dtype=np.int64)  # band-0 pieces hang from the root
    parent[child[first]] = lower[first]
    parent[k] = -1
    return ReebTree(
        label=label,
        band=node_band,
        centre=np.vstack([centre, root]),
        radius=np.append(radius, 0.0),
        parent=parent,
    )


def _children(parent: np.ndarray) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in range(len(parent))]
    for node, p in enumerate(parent):
        if p >= 0:
            kids[int(p)].append(node)
    return kids


def _bfs(kids: list[list[int]], root: int) -> list[int]:
    order = [root]
    for node in order:  # the list grows as it is walked
        order.extend(kids[node])
    return order


def prune(tree: ReebTree, min_spur: float) -> tuple[list[list[int]], np.ndarray]:
    """(kept children per node, owner): drop side branches shorter than the ring they
    start from is wide (or ``min_spur``); a dropped piece's owner is its kept ancestor.

    The longest branch of every node is always kept, so each extremity keeps its path.
    """
    pos = tree.centre
    root = len(pos) - 1
    kids = _children(tree.parent)
    order = _bfs(kids, root)
    depth = np.zeros(len(pos))
    kept: list[list[int]] = [[] for _ in range(len(pos))]
    for node in reversed(order):
        if not kids[node]:
            continue
        reach = [depth[c] + float(np.linalg.norm(pos[c] - pos[node])) for c in kids[node]]
        best = int(np.argmax(reach))
        limit = max(min_spur, SPUR_RADII * tree.radius[node])
        kept[node] = [c for i, c in enumerate(kids[node]) if i == best or reach[i] >= limit]
        depth[node] = max(reach)
    owner = np.arange(len(pos))
    alive = np.zeros(len(pos), dtype=bool)
    alive[root] = True
    for node in order:
        keep = set(kept[node])
        for c in kids[node]:
            alive[c] = alive[node] and c in keep
            owner[c] = c if alive[c] else owner[node]
    return kept, owner
