"""builtin-parts' clean-up of a labelling: parts made connected and of a useful size,
their boundaries recut along creases, and merged down to the count asked for."""

from __future__ import annotations

import numpy as np

from adapters.builtin.parts.graph import FaceGraph, adjacency, subgraph

MIN_PART_SHARE = 0.004  # an island under this share of the total area is no part
MIN_ISLAND_SHARE = 0.15  # a piece under this share of its label's largest piece is an island


def compact(labels: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Labels (ints from 0) renumbered 0.. by decreasing area, part 0 the largest (ties
    keep their order); labels no face has are dropped."""
    count = np.bincount(labels)
    total = np.bincount(labels, weights=areas, minlength=len(count))
    used = np.flatnonzero(count)
    rank = np.full(len(count), -1)
    rank[used[np.argsort(-total[used], kind="stable")]] = np.arange(len(used))
    return rank[labels]


def connected_parts(graph: FaceGraph, labels: np.ndarray) -> np.ndarray:
    """Every part one face-connected piece of a useful size.

    A label in several pieces keeps its largest; another piece becomes a part of its
    own when it is large (over MIN_ISLAND_SHARE of the largest and MIN_PART_SHARE of
    the surface), else it joins the piece it shares the longest boundary with. A
    small piece with no neighbour (a separate shell) joins the nearest part.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    n = graph.n
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    same = labels[a] == labels[b]
    count, comp = connected_components(
        sparse.csr_matrix((np.ones(int(same.sum())), (a[same], b[same])), shape=(n, n)),
        directed=False,
    )
    area = np.bincount(comp, weights=graph.areas, minlength=count)
    comp_label = np.zeros(count, np.int64)
    comp_label[comp] = labels
    label_max = np.zeros(labels.max() + 1)
    np.maximum.at(label_max, comp_label, area)
    small = (area < MIN_ISLAND_SHARE * label_max[comp_label]) | (area < MIN_PART_SHARE * area.sum())
    if small.all():  # everything is crumbs: keep the largest crumb
        small[np.argmax(area)] = False
    # Shared boundary length between pieces, merged in order of size, smallest first.
    cross = ~same
    border = sparse.csr_matrix(
        (
            np.concatenate([graph.length[cross]] * 2),
            (
                np.concatenate([comp[a[cross]], comp[b[cross]]]),
                np.concatenate([comp[b[cross]], comp[a[cross]]]),
            ),
        ),
        shape=(count, count),
    ).tolil()
    owner = np.arange(count)  # union-find without ranks: chains stay short here

    def find(i: int) -> int:
        while owner[i] != i:
            owner[i] = owner[owner[i]]
            i = owner[i]
        return i

    lonely = []
    for c in np.flatnonzero(small)[np.argsort(area[small], kind="stable")]:
        row = border.rows[c]
        if not row:
            lonely.append(int(c))
            continue
        nbr = int(row[int(np.argmax(border.data[c]))])
        target = find(nbr)
        owner[c] = target
        # The merged piece borders what either bordered.
        for j, w in zip(border.rows[c], border.data[c], strict=True):
            tj = find(j)
            if tj != target:
                border[target, tj] = border[target, tj] + w
                border[tj, target] = border[tj, target] + w
    roots = np.array([find(i) for i in range(count)])
    if lonely:
        from scipy.spatial import cKDTree

        settled = ~np.isin(roots[comp], lonely)
        if settled.any():
            tree = cKDTree(graph.centroids[settled])
            for c in lonely:
                faces = np.flatnonzero(comp == c)
                _, near = tree.query(graph.centroids[faces[:1]])
                roots[c] = roots[comp[np.flatnonzero(settled)[near[0]]]]
    return compact(roots[comp], graph.areas)


def refine_boundaries(graph: FaceGraph, labels: np.ndarray, band: float) -> np.ndarray:
    """Each boundary between two parts recut by a minimum cut within ``band`` of it.

    Katz and Tal's fuzzy region: faces near the boundary are undecided; the rest of
    each part is contracted into a terminal. An edge costs its length times its crease
    damping, so the cut runs along a concave crease when the band holds one, else the
    shortest way round. At most half of a part's area is ever undecided, so a part
    cannot vanish into its neighbour. The work is done on the faces near a boundary
    only, so a dense mesh costs little more than its boundaries.
    """
    from scipy.sparse.csgraph import dijkstra

    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    seam = labels[a] != labels[b]
    if not seam.any():
        return labels
    starts = np.unique(graph.pairs[seam])
    near = np.isfinite(
        dijkstra(
            adjacency(graph.n, graph.pairs, graph.span), indices=starts, min_only=True, limit=band
        )
    )
    # The faces near a boundary and the ring around them, which anchors the cuts.
    local = near.copy()
    local[graph.pairs[near[a] | near[b]]] = True
    sub, _ = subgraph(graph, local)
    whole = np.bincount(labels, weights=graph.areas)
    unit = 1000.0 / max(float(np.median(graph.length)), 1e-12)
    out = labels.copy()
    out[local] = _recut(sub, labels[local], band, whole, unit)
    return out


def _recut(
    graph: FaceGraph, labels: np.ndarray, band: float, whole: np.ndarray, unit: float
) -> np.ndarray:
    """``refine_boundaries`` on the faces near boundaries; ``whole``: each part's area on
    the whole mesh, kept up to date as faces change hands."""
    from scipy import sparse
    from scipy.sparse.csgraph import breadth_first_order, dijkstra, maximum_flow

    labels, whole = labels.copy(), whole.copy()
    n = graph.n
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    cost = graph.length * graph.crease()
    la, lb = labels[a], labels[b]
    cross = la != lb
    pair_key = np.sort(np.column_stack([la[cross], lb[cross]]), axis=1)
    if not len(pair_key):
        return labels
    keys, inverse = np.unique(pair_key, axis=0, return_inverse=True)
    shared = np.bincount(inverse.reshape(-1), weights=graph.length[cross])
    for p, q in keys[np.argsort(-shared, kind="stable")]:
        la, lb = labels[a], labels[b]
        inside = (labels == p) | (labels == q)
        sub = inside[a] & inside[b]
        seam = sub & (la != lb)
        if not seam.any():
            continue
        span = adjacency(n, graph.pairs[sub], graph.span[sub])
        starts = np.unique(graph.pairs[seam])
        dist = dijkstra(span, indices=starts, min_only=True, limit=band)
        free = np.isfinite(dist) & inside
        for side in (p, q):
            mine = np.flatnonzero(free & (labels == side))
            order = mine[np.argsort(dist[mine], kind="stable")]
            over = np.cumsum(graph.areas[order]) > 0.5 * whole[side]
            free[order[over]] = False
        nodes = np.flatnonzero(free)
        if not len(nodes):
            continue
        index = np.full(n, -1)
        index[nodes] = np.arange(len(nodes))
        src, snk = len(nodes), len(nodes) + 1
        fa, fb = free[a], free[b]
        inner = sub & fa & fb
        edge_u, edge_v = index[a[inner]], index[b[inner]]
        caps = [cost[inner]] * 2
        rows, cols = [edge_u, edge_v], [edge_v, edge_u]
        # An edge from an undecided face to a decided one ties it to that terminal.
        for mask, u_end, v_end in ((sub & fa & ~fb, a, b), (sub & fb & ~fa, b, a)):
            u, v = index[u_end[mask]], labels[v_end[mask]]
            rows += [np.where(v == p, src, u)]
            cols += [np.where(v == p, u, snk)]
            caps += [cost[mask]]
        cap = np.clip(np.round(np.concatenate(caps) * unit), 1, 2**30).astype(np.int32)
        graph_cap = sparse.csr_matrix(
            (cap, (np.concatenate(rows), np.concatenate(cols))), shape=(len(nodes) + 2,) * 2
        )
        graph_cap.sum_duplicates()
        flow = maximum_flow(graph_cap, src, snk, method="dinic").flow
        residual = (graph_cap - flow).tocsr()
        residual.data = (residual.data > 0).astype(np.int8)
        residual.eliminate_zeros()
        reach = breadth_first_order(residual, src, directed=True, return_predecessors=False)
        side_p = np.zeros(len(nodes) + 2, bool)
        side_p[reach] = True
        new = np.where(side_p[: len(nodes)], p, q)
        gained = graph.areas[nodes][(new == p) & (labels[nodes] == q)].sum()
        lost = graph.areas[nodes][(new == q) & (labels[nodes] == p)].sum()
        whole[p] += gained - lost
        whole[q] += lost - gained
        labels[nodes] = new
    return labels


def merge_to_count(graph: FaceGraph, labels: np.ndarray, count: int) -> np.ndarray:
    """Merge parts until at most ``count`` are left: each time, the pair whose shared
    boundary is the least creased for the size of the smaller part; parts that share
    no boundary (separate shells) go, smallest first, to the nearest other part."""
    labels = compact(labels, graph.areas)
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    strength = graph.length * graph.crease()
    while labels.max() + 1 > count:
        la, lb = labels[a], labels[b]
        cross = la != lb
        area = np.bincount(labels, weights=graph.areas)
        if cross.any():
            key = np.sort(np.column_stack([la[cross], lb[cross]]), axis=1)
            keys, inverse = np.unique(key, axis=0, return_inverse=True)
            bond = np.bincount(inverse.reshape(-1), weights=strength[cross])
            score = bond / np.sqrt(np.minimum(area[keys[:, 0]], area[keys[:, 1]]))
            keep, gone = keys[np.argmax(score)]
        else:
            from scipy.spatial import cKDTree

            gone = int(np.argmin(area))
            mine = labels == gone
            dist, near = cKDTree(graph.centroids[~mine]).query(graph.centroids[mine])
            keep = labels[~mine][near[np.argmin(dist)]]
        labels = compact(np.where(labels == gone, keep, labels), graph.areas)
    return labels
