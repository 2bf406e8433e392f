"""builtin-rig: a mesh to a skinned GLB on the CPU: a joint tree and bone-heat weights.

The pipeline, each step a function over numpy arrays (I/O stays in the adapter):

1. ``surface.weld`` and ``split_bodies``: vertices split at UV seams are joined so the surface is
   one connected graph; the largest body is rigged, small separate pieces (eyes, a
   sword) follow the body point nearest to them rigidly, and several bodies of
   comparable size are refused (one character per job).
2. ``proxy_mesh``: skeleton and weights are computed on a copy of bounded size and edge
   length: decimated (fast_simplification) when large, long edges cut by
   ``split_long_edges`` when coarse (boolean unions and CAD leave long slivers, which
   would leave gaps between the level sets below and spoil the cotangent Laplacian).
3. ``skeleton``: a Reeb graph of the geodesic distance from a ring of surface around the
   centre of mass. Each band of that distance splits into connected pieces: on a limb
   a ring, whose centroid lies on the limb's axis; where limbs meet, the ring splits.
   The pieces form a tree from the root out to every extremity; side branches shorter
   than the body is thick where they start (bumps, noise) are pruned, and each path
   between branch points becomes a chain of joints about ``bone_length`` apart. A
   joint that lands outside (the centroid of a ring about to split at a crotch sits
   between the legs) is moved along its bone back inside.
4. ``bone_heat``: Baran and Popovic's bone heat on the surface, (-L + H) w_j = H p_j
   with the cotangent Laplacian L (libigl), H = 1/d^2 to the vertex's bone and p_j = 1
   where that bone belongs to joint j (a bone drives the joint it starts from). A
   vertex's bone is the nearest among those through its own Reeb piece and its
   neighbours: the surface decides, so a hand resting on a hip still binds to the arm.
5. ``transfer`` (decimated proxies only) and ``limit_influences``: weights back on the
   input's vertices, the 4 largest kept and renormalised in float32; every vertex
   keeps at least one.

Joints get direction names: a chain ending in an extremity is named for where that
extremity lies from the root ("up", "left", "right", "down.L", "down.R" on a T-posed
figure, which faces +Z so its left is +X), a chain between branch points "trunk_<dir>".
A shape with no limbs (a round blob) gets the root joint alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters import surface
from adapters.base import Adapter, Artifact, InputError, Item, Result
from adapters.gltf_skin import skinned_glb

MIN_VERTICES = 8  # fewer than this is no shape to rig
COMPARABLE_BODY = 0.25  # a separate piece with this share of the main body's area is a body
SEED_RADIUS = 1.5  # root ring: surface within this many times the nearest distance of the centre
SPUR_RADII = 1.0  # branches shorter than this many ring radii where they start are bumps
MIN_WEIGHT = 0.01  # influences below this are dropped before renormalising
HEAT = 1.0  # bone heat constant c in H = c / d^2 (Baran and Popovic use 1)
BAND_EDGES = 1.5  # distance bands this many proxy edge limits wide: rings stay connected
PALETTE = np.array(
    [
        [230, 97, 75], [75, 150, 230], [105, 195, 95], [240, 190, 60], [170, 110, 210],
        [60, 200, 200], [240, 130, 180], [150, 150, 90], [95, 110, 130], [220, 160, 120],
    ],
    dtype=np.float64,
)  # fmt: skip


class RigParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bone_length: float = Field(
        0.08, ge=0.02, le=0.5, description="target bone length, a share of the longest side"
    )
    max_influences: int = Field(4, ge=1, le=4, description="joints per vertex at most")
    proxy_faces: int = Field(
        12_000, ge=2_000, le=100_000, description="size of the copy the rig is computed on"
    )


@dataclass
class Skeleton:
    """A joint tree in bind pose: joint 0 is the root, parents precede their children."""

    positions: np.ndarray  # (J, 3)
    parents: np.ndarray  # (J,) int, -1 for the root
    names: list[str]
    chains: list[tuple[str, list[int]]] = field(default_factory=list)


# ---------------------------------------------------------------------------- surface


def _vertex_labels(n: int, tris: np.ndarray) -> tuple[int, np.ndarray]:
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]]])
    graph = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    return count, labels


def _edge_table(tris: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique edges (E, 2) sorted within, each face side's edge (F, 3), uses per edge).

    Sides are keyed as one int64 (low * n + high): np.unique on rows is far slower.
    """
    keys, inv, counts = np.unique(
        surface.edge_keys(tris, n), return_inverse=True, return_counts=True
    )
    return np.column_stack([keys // n, keys % n]), inv.reshape(-1, 3), counts


def split_bodies(points: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels per point, label of the main body): the connected piece of largest area.

    Raises InputError when another piece is comparable in size: which one to rig (or
    how to join them) is not ours to guess.
    """
    _, labels = _vertex_labels(len(points), tris)
    used = np.unique(tris)
    if len(used) < MIN_VERTICES:
        raise InputError(f"mesh has {len(used)} distinct vertices; too few to rig")
    face_label = labels[tris[:, 0]]
    area = _face_areas(points, tris)
    per_body = np.bincount(face_label, weights=area, minlength=labels.max() + 1)
    main = int(np.argmax(per_body))
    if per_body[main] <= 0:
        raise InputError("mesh has no surface area: every triangle is degenerate")
    big = np.flatnonzero(per_body >= COMPARABLE_BODY * per_body[main])
    if len(big) > 1:
        shares = ", ".join(f"{a / per_body.sum():.0%}" for a in sorted(per_body[big])[::-1])
        raise InputError(
            f"mesh has {len(big)} separate bodies of comparable size (area shares {shares});"
            " builtin-rig rigs one connected body: submit each body as its own job"
        )
    return labels, main


def split_long_edges(
    points: np.ndarray, tris: np.ndarray, max_len: float, *, rounds: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Cut every edge longer than ``max_len`` into equal parts until none is left.

    A face with cut edges is re-triangulated by zipping its outline from the corner
    where its shortest side starts: a long sliver (what boolean unions leave along
    cylinders) becomes a ladder of about two triangles per part, where repeated
    bisection would give three per halving. A large face gets long rungs, which the
    next round cuts. Existing points keep their indices; new ones are appended.
    """
    v, f = np.asarray(points, np.float64), np.asarray(tris, np.int64)
    for _ in range(rounds):
        uniq, inv, _ = _edge_table(f, len(v))
        length = np.linalg.norm(v[uniq[:, 0]] - v[uniq[:, 1]], axis=1)
        parts = np.maximum(np.ceil(length / max_len).astype(np.int64), 1)
        if (parts == 1).all():
            break
        first = len(v) + np.r_[0, np.cumsum(parts - 1)[:-1]]  # first new point of each edge
        cut = np.flatnonzero(parts > 1)
        t = np.concatenate([np.arange(1, parts[e]) / parts[e] for e in cut])
        e_of = np.repeat(cut, parts[cut] - 1)
        a, b = v[uniq[e_of, 0]], v[uniq[e_of, 1]]
        v = np.vstack([v, a + t[:, None] * (b - a)])
        busy = (parts[inv] > 1).any(axis=1)
        # Per busy face: the new points inside each side, in the face's winding order.
        fb, eb = f[busy], inv[busy]
        forward = uniq[eb, 0] == fb
        starts = np.argmin(length[eb], axis=1)  # each outline starts at its shortest side
        made: list[tuple[int, int, int]] = []
        for face, sides, fwd, start in zip(
            fb.tolist(), eb.tolist(), forward.tolist(), starts.tolist(), strict=True
        ):
            cuts = []
            for e, ahead in zip(sides, fwd, strict=True):
                inner = list(range(first[e], first[e] + parts[e] - 1))
                cuts.append(inner if ahead else inner[::-1])
            made += _zip_face(face, cuts, start, v)
        f = np.concatenate([f[~busy], np.asarray(made, dtype=np.int64).reshape(-1, 3)])
    return v, f


def _zip_face(
    face: list[int], cuts: list[list[int]], start: int, v: np.ndarray
) -> list[tuple[int, int, int]]:
    """Triangles covering one face whose sides carry extra points (winding kept).

    ``cuts[s]`` are the points inside side s (face[s] -> face[s + 1]) in that order;
    the outline starts at corner ``start``. Plain Python: faces are few and small.
    """
    ring: list[int] = []
    side: list[int] = []  # the side (in outline order) each point starts or lies on
    for k in range(3):
        s = (start + k) % 3
        ring += [face[s], *cuts[s]]
        side += [k] * (1 + len(cuts[s]))
    m = len(ring)
    if side[1] == 1 and side[m - 2] == 1:  # only the side facing the start is cut: a fan
        return [(ring[0], ring[i], ring[i + 1]) for i in range(1, m - 1)]
    corner = [i == 0 or side[i - 1] != side[i] for i in range(m)]
    pts = v[ring].tolist()
    tris = [(ring[0], ring[1], ring[m - 1])]
    lo, hi = 1, m - 1  # the current rung
    while lo + 1 < hi:
        grow_lo = math.dist(pts[lo + 1], pts[hi]) <= math.dist(pts[lo], pts[hi - 1])
        # Never a chord along a side: it would leave a flat triangle behind it. (With
        # one point left, both choices make the same last triangle.)
        if lo + 2 < hi:
            a, b = (lo + 1, hi) if grow_lo else (lo, hi - 1)
            if side[a] == side[b] or (corner[b] and side[b] == side[a] + 1):
                grow_lo = not grow_lo
        if grow_lo:
            tris.append((ring[lo], ring[lo + 1], ring[hi]))
            lo += 1
        else:
            tris.append((ring[lo], ring[hi - 1], ring[hi]))
            hi -= 1
    return tris


def proxy_mesh(
    points: np.ndarray, tris: np.ndarray, *, target_faces: int
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """(points, triangles, edge limit, decimated): the surface the rig is computed on.

    Without decimation the input points keep their indices (new ones are appended), so
    weights come back to them exactly. The edge limit is 2x the edge of equilateral
    triangles tiling the area with ``target_faces``.
    """
    area = _face_areas(points, tris).sum()
    max_len = 2.0 * float(np.sqrt(4.0 * area / (np.sqrt(3.0) * target_faces)))
    decimated = len(tris) > target_faces
    if decimated:
        import fast_simplification

        points, tris = fast_simplification.simplify(
            points, tris, target_reduction=1.0 - target_faces / len(tris)
        )
        tris = np.asarray(tris, np.int64)
        # Decimation may leave crumbs: keep the largest connected piece.
        _, labels = _vertex_labels(len(points), tris)
        keep = labels[tris[:, 0]] == np.bincount(labels[tris[:, 0]]).argmax()
        tris = tris[keep]
    points, tris = split_long_edges(points, tris, max_len)
    # Flat triangles (decimation can leave some) have no cotangents: the Laplacian skips them.
    tris = tris[_face_areas(points, tris) > 1e-12 * max_len**2]
    return points, tris, max_len, decimated


def _face_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def centre_of_mass(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Of the enclosed volume when the surface is closed, else of the surface itself."""
    _, _, counts = _edge_table(tris, len(points))
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    if (counts == 2).all():
        volume = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
        if abs(volume.sum()) > 1e-12:
            return (volume[:, None] * (a + b + c) / 4.0).sum(axis=0) / volume.sum()
    area = _face_areas(points, tris)
    return (area[:, None] * (a + b + c) / 3.0).sum(axis=0) / area.sum()


def winding_number(points: np.ndarray, tris: np.ndarray, at: np.ndarray) -> float:
    """Exact winding number of the surface around one point: 1 inside, 0 outside.

    The sum of the triangles' signed solid angles (Van Oosterom and Strackee); for a
    single point this beats building libigl's tree.
    """
    a, b, c = (points[tris[:, i]] - at for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    det = np.einsum("ij,ij->i", a, np.cross(b, c))
    dots = np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la
    den = la * lb * lc + dots + np.einsum("ij,ij->i", c, a) * lb
    return float(2.0 * np.arctan2(det, den).sum() / (4.0 * np.pi))


# ---------------------------------------------------------------------------- skeleton


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
    edges = _edge_table(tris, n)[0]
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
    np.add.at(mass, tris, np.repeat(_face_areas(points, tris)[:, None] / 3.0, 3, axis=1))
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


def _chains(kept: list[list[int]], root: int, pos: np.ndarray, min_len: float) -> list[list[int]]:
    """Paths of pieces between branch points (root first, parents before children).

    A path between two branch points shorter than ``min_len`` is merged away: its end's
    branches start from its start instead (arms that split one band apart share a joint).
    """

    def length(path: list[int]) -> float:
        return float(np.linalg.norm(np.diff(pos[path], axis=0), axis=1).sum())

    def walk(start: int, first: int) -> list[int]:
        path = [start, first]
        while len(kept[path[-1]]) == 1:
            path.append(kept[path[-1]][0])
        return path

    out: list[list[int]] = []
    queue = [walk(root, c) for c in kept[root]]
    while queue:
        path = queue.pop(0)
        end = path[-1]
        if kept[end] and length(path) < min_len:
            queue = [path + walk(end, c)[1:] for c in kept[end]] + queue
            continue
        out.append(path)
        queue.extend(walk(end, c) for c in kept[end])
    return out


def _smooth(polyline: np.ndarray, passes: int = 2) -> np.ndarray:
    p = polyline.copy()
    for _ in range(passes):
        if len(p) > 2:
            p[1:-1] = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
    return p


def _direction(d: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(d)))
    return (("right", "left"), ("down", "up"), ("back", "front"))[axis][int(d[axis] > 0)]


def _chain_names(paths: list[list[int]], pos: np.ndarray, leaf: list[bool]) -> list[str]:
    """Direction names; repeats told apart by side (.L is +X, the figure's left) or number."""
    root = pos[paths[0][0]] if paths else np.zeros(3)
    base = [
        _direction(pos[p[-1]] - root) if is_leaf else "trunk_" + _direction(pos[p[-1]] - pos[p[0]])
        for p, is_leaf in zip(paths, leaf, strict=True)
    ]
    names = list(base)
    for name in set(base):
        same = [i for i, b in enumerate(base) if b == name]
        if len(same) == 1:
            continue
        same.sort(key=lambda i: pos[paths[i][-1]][0])
        if len(same) == 2 and name not in ("left", "right"):
            names[same[0]], names[same[1]] = name + ".R", name + ".L"
        else:
            for n, i in enumerate(same, 1):
                names[i] = f"{name}.{n}"
    return names


def _pull_inside(
    positions: np.ndarray, parents: np.ndarray, points: np.ndarray, tris: np.ndarray
) -> np.ndarray:
    """Joints outside the surface moved toward their parent until a little inside.

    A ring that is about to split (at a crotch, an armpit) has its centroid in the gap
    between the limbs; the bone toward the parent crosses back into the body.
    """
    import igl

    out = positions.copy()
    steps = np.linspace(0.0, 1.0, 17)  # 0: the joint itself
    parent = np.maximum(parents, 0)
    trial = out[:, None, :] + steps[None, :, None] * (out[parent] - out)[:, None, :]
    # One call for all samples: the winding number's tree is built per call.
    inside = np.abs(igl.fast_winding_number(points, tris, trial.reshape(-1, 3))) > 0.5
    inside = inside.reshape(len(out), len(steps))
    p, q = positions, positions[parent]  # moves are along the bones as first placed
    for j in np.flatnonzero(~inside[:, 0] & (parents >= 0)):
        hit = np.flatnonzero(inside[j])
        if len(hit):  # the first inside sample, then a quarter of the rest of the way
            t = steps[hit[0]]
            out[j] = p[j] + (t + 0.25 * (1.0 - t)) * (q[j] - p[j])
    return out


def skeleton(
    points: np.ndarray,
    tris: np.ndarray,
    *,
    bone_length: float,
    band_width: float,
) -> tuple[Skeleton, np.ndarray, np.ndarray]:
    """(skeleton, owner piece per point (-1: unreached), allowed (pieces, joints)).

    ``allowed[piece, j]`` says the bone ending at joint j may claim that piece's
    points: the bone through the piece and those through its neighbours.
    """

    centre = centre_of_mass(points, tris)
    inside = abs(winding_number(points, tris, centre)) > 0.5  # either orientation
    gap = np.linalg.norm(points - centre, axis=1)
    used = np.zeros(len(points), dtype=bool)
    used[tris] = True
    gap[~used] = np.inf
    near = float(gap.min())
    seeds = np.flatnonzero(gap <= max(SEED_RADIUS * near, near + band_width))
    tree = reeb_tree(points, tris, seeds, band_width, centre)
    root = len(tree.centre) - 1
    if not inside:  # a bent or hollow shape: start from the root ring's centroid instead
        tree.centre[root] = tree.centre[:-1][tree.band == 0].mean(axis=0)
    tree.radius[root] = near
    kept, owner = prune(tree, 2.0 * band_width)
    pos = tree.centre
    paths = _chains(kept, root, pos, 0.5 * bone_length)
    leaf = [not kept[p[-1]] for p in paths]
    chain_names = _chain_names(paths, pos, leaf)

    positions, parents, names = [pos[root]], [-1], ["root"]
    joint_at = {root: 0}
    bone_of = np.full(len(pos), -1, dtype=np.int64)  # a piece's bone, named by its end joint
    chains: list[tuple[str, list[int]]] = []
    for path, chain, is_leaf in zip(paths, chain_names, leaf, strict=True):
        line = _smooth(pos[path])
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))]
        if is_leaf and arc[-1] < 0.25 * bone_length:
            continue  # a stub (all of a round blob is one ring): its points go to neighbours
        total = max(float(arc[-1]), 1e-9)
        count = max(1, int(round(total / bone_length)))
        ids = []
        previous = joint_at[path[0]]
        for step in range(1, count + 1):
            at = total * step / count
            p = np.array([np.interp(at, arc, line[:, i]) for i in range(3)])
            ids.append(len(positions))
            positions.append(p)
            parents.append(previous)
            names.append(f"{chain}_{step}")
            previous = ids[-1]
        joint_at[path[-1]] = ids[-1]
        chains.append((chain, ids))
        span = np.clip((arc[1:] / (total / count)).astype(np.int64), 0, count - 1)
        for node, s in zip(path[1:], span, strict=True):
            if bone_of[node] < 0:
                bone_of[node] = ids[s]

    joints = len(positions)
    placed = _pull_inside(np.asarray(positions), np.asarray(parents), points, tris)
    allowed = np.zeros((len(pos), joints), dtype=bool)
    for node in range(len(pos)):
        if bone_of[node] < 0:
            continue
        near_nodes = [node, *kept[node]]
        if tree.parent[node] >= 0:
            near_nodes.append(int(tree.parent[node]))
        for other in near_nodes:
            if bone_of[other] >= 0:
                allowed[node, bone_of[other]] = True
    point_owner = np.where(tree.label >= 0, owner[np.maximum(tree.label, 0)], -1)
    skel = Skeleton(placed, np.asarray(parents, dtype=np.int64), names, chains)
    return skel, point_owner, allowed


# ---------------------------------------------------------------------------- weights


def segment_distances(points: np.ndarray, heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """(N, B) distance from every point to every segment heads[b] -> tails[b]."""
    d = tails - heads  # (B, 3)
    dd = np.maximum((d * d).sum(axis=1), 1e-18)
    out = np.empty((len(points), len(d)))
    for lo in range(0, len(points), 4096):  # bounds the (chunk, B, 3) temporaries
        rel = points[lo : lo + 4096, None, :] - heads[None, :, :]
        t = np.clip(np.einsum("nbk,bk->nb", rel, d) / dd, 0.0, 1.0)
        out[lo : lo + 4096] = np.linalg.norm(rel - t[..., None] * d[None, :, :], axis=2)
    return out


def bone_heat(
    points: np.ndarray,
    tris: np.ndarray,
    skel: Skeleton,
    point_owner: np.ndarray,
    allowed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """((N, J) weights, (N,) joint of each point's own bone): heat diffused from bones.

    Solves (-C + M H) w_j = M H p_j once per joint with a bone (one factorisation), C
    the cotangent stiffness matrix and M the Voronoi areas, so the balance between
    smoothness and staying with the nearest bone does not depend on the mesh's density.
    The weights of a point sum to one by linearity.
    """
    import igl
    from scipy import sparse
    from scipy.sparse.linalg import splu

    n, joints = len(points), len(skel.positions)
    if joints == 1:  # no bones: the root holds everything
        return np.ones((n, 1)), np.zeros(n, dtype=np.int64)
    tails = np.arange(1, joints)
    heads = skel.parents[tails]
    dist = segment_distances(points, skel.positions[heads], skel.positions[tails])
    mask = allowed[np.maximum(point_owner, 0)][:, tails]
    mask[(point_owner < 0) | ~mask.any(axis=1)] = True
    dist = np.where(mask, dist, np.inf)
    bone = np.argmin(dist, axis=1)
    own = heads[bone]
    scale = float(np.ptp(points, axis=0).max())
    d = np.maximum(dist[np.arange(n), bone], 1e-3 * scale)
    stiffness = -igl.cotmatrix(points, tris)
    mass = igl.massmatrix(points, tris, igl.MASSMATRIX_TYPE_VORONOI).diagonal()
    heat = mass * HEAT / (d * d)
    # A tiny diagonal keeps the system regular at points no triangle uses (zero mass).
    system = (stiffness + sparse.diags(heat + 1e-9 * max(float(heat.max()), 1.0))).tocsc()
    columns = np.unique(heads)
    rhs = np.zeros((n, len(columns)))
    rhs[np.arange(n), np.searchsorted(columns, own)] = heat
    solved = splu(system).solve(rhs)
    weights = np.zeros((n, joints))
    weights[:, columns] = np.clip(np.nan_to_num(solved), 0.0, 1.0)
    return weights, own


def limit_influences(
    weights: np.ndarray, fallback: np.ndarray, count: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """((N, 4) joint indices, (N, 4) float32 weights summing to one in float32).

    The ``count`` largest are kept and those under MIN_WEIGHT dropped; a point left
    with nothing is bound wholly to its ``fallback`` joint. Unused slots hold joint 0
    with weight 0.
    """
    n = len(weights)
    count = min(count, weights.shape[1])
    w = np.where(np.isfinite(weights), np.maximum(weights, 0.0), 0.0)
    if count < w.shape[1]:
        order = np.argpartition(-w, count - 1, axis=1)[:, :count]
    else:
        order = np.tile(np.arange(count), (n, 1))
    top = np.take_along_axis(w, order, axis=1)
    rank = np.argsort(-top, axis=1, kind="stable")  # largest first
    order, top = np.take_along_axis(order, rank, axis=1), np.take_along_axis(top, rank, axis=1)
    total = top.sum(axis=1, keepdims=True)
    top = np.where(top >= MIN_WEIGHT * np.maximum(total, 1e-300), top, 0.0)
    empty = top.sum(axis=1) <= 0
    order[empty, 0], top[empty, 0] = fallback[empty], 1.0
    top /= top.sum(axis=1, keepdims=True)
    index = np.zeros((n, 4), dtype=np.int64)
    value = np.zeros((n, 4), dtype=np.float32)
    index[:, :count] = np.where(top > 0, order, 0)
    value[:, :count] = top
    value /= value.sum(axis=1, keepdims=True, dtype=np.float32)
    return index, value


def transfer(
    target: np.ndarray,
    target_normals: np.ndarray,
    source: np.ndarray,
    source_normals: np.ndarray,
    values: np.ndarray,
    *,
    k: int = 6,
) -> np.ndarray:
    """Values at ``target`` points from the nearest ``source`` points facing the same way.

    Normals keep a point from taking values across a thin gap (the inside of a thigh
    from the other thigh); inverse-distance blending among the agreeing neighbours.
    """
    from scipy.spatial import cKDTree

    k = min(k, len(source))
    dist, idx = cKDTree(source).query(target, k=k)
    dist, idx = dist.reshape(len(target), k), idx.reshape(len(target), k)
    agree = np.einsum("nkc,nc->nk", source_normals[idx], target_normals) > 0.0
    agree[~agree.any(axis=1), 0] = True  # nothing agrees: take the nearest
    w = np.where(agree, 1.0 / (dist + 1e-9), 0.0)
    w /= w.sum(axis=1, keepdims=True)
    out = np.zeros((len(target), values.shape[1]))
    for slot in range(k):
        out += w[:, slot, None] * values[idx[:, slot]]
    return out


def _normals(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    face = np.cross(b - a, c - a)  # area-weighted
    out = np.zeros_like(points)
    for corner in range(3):
        np.add.at(out, tris[:, corner], face)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)


# ---------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    skeleton: Skeleton
    joint_index: np.ndarray  # (N, 4) per input vertex
    weights: np.ndarray  # (N, 4) float32, rows sum to one


def rig(vertices: np.ndarray, faces: np.ndarray, params: RigParams) -> tuple[Rig, dict[str, Any]]:
    """Skeleton and skin weights for a mesh's vertices, plus the numbers worth recording."""
    from scipy.spatial import cKDTree

    clock = [time.perf_counter()]
    points, tris, index, _ = surface.weld(vertices, faces, bits=20)
    labels, main = split_bodies(points, tris)
    body = tris[labels[tris[:, 0]] == main]
    body_points = np.unique(body)
    compact = np.full(len(points), -1, dtype=np.int64)
    compact[body_points] = np.arange(len(body_points))
    bp, bf = points[body_points], compact[body]
    clock.append(time.perf_counter())

    pp, pf, max_len, decimated = proxy_mesh(bp, bf, target_faces=params.proxy_faces)
    clock.append(time.perf_counter())
    size = float(np.ptp(bp, axis=0).max())
    skel, owner, allowed = skeleton(
        pp, pf, bone_length=params.bone_length * size, band_width=BAND_EDGES * max_len
    )
    clock.append(time.perf_counter())
    w_proxy, own = bone_heat(pp, pf, skel, owner, allowed)
    clock.append(time.perf_counter())

    # Back to the welded points: exactly where the proxy kept them, else by transfer;
    # separate small pieces take the weights of the body point nearest to them.
    dist, nearest = cKDTree(pp).query(points)
    w_points = w_proxy[nearest]
    if decimated:
        w_points[body_points] = transfer(bp, _normals(bp, bf), pp, _normals(pp, pf), w_proxy)
    else:
        w_points[body_points] = w_proxy[: len(bp)]
        nearest[body_points] = np.arange(len(bp))
    other = np.flatnonzero(labels != main)
    if len(other):  # per piece, its point nearest the body anchors all of it
        order = other[np.lexsort((dist[other], labels[other]))]
        first = np.r_[True, labels[order][1:] != labels[order][:-1]]
        nearest[order] = nearest[order[first]][np.cumsum(first) - 1]
        w_points[order] = w_proxy[nearest[order]]
    joint_index, weights = limit_influences(
        w_points[index], own[nearest][index], params.max_influences
    )
    clock.append(time.perf_counter())

    info = {
        "joints": len(skel.names),
        "chains": {name: [skel.names[j] for j in ids] for name, ids in skel.chains},
        "max_influences": int((weights > 0).sum(axis=1).max()),
        "bodies": int(len(np.unique(labels[np.unique(tris)]))),
        "proxy_faces": int(len(pf)),
        "seconds": {
            stage: round(float(dt), 4)
            for stage, dt in zip(
                ("weld", "proxy", "skeleton", "weights", "transfer"), np.diff(clock), strict=True
            )
        },
    }
    return Rig(skel, joint_index, weights), info


# ---------------------------------------------------------------------------- preview


def joint_colours(skel: Skeleton) -> np.ndarray:
    """(J, 3) 0-255: one hue per chain, alternating lighter and darker along it."""
    out = np.tile(np.array([120.0, 120.0, 125.0]), (len(skel.names), 1))
    for c, (_, ids) in enumerate(skel.chains):
        for step, j in enumerate(ids):
            out[j] = PALETTE[c % len(PALETTE)] * (1.0 if step % 2 == 0 else 0.55)
    return out


def bone_preview(
    vertices: np.ndarray,
    faces: np.ndarray,
    skin: Rig,
    *,
    size: int = 512,
    view: str = "three_quarter",
) -> np.ndarray:
    """The mesh coloured by its weights (each joint's bone colour, blended) with the
    bones drawn over it, always visible, in the framing of ``runner.preview.render``.

    The colour a vertex shows is that of the joints it follows: a weight bleeding into
    the wrong limb shows as a patch of that limb's colour.
    """
    import trimesh
    from PIL import Image, ImageDraw

    from runner.preview import MARGIN, camera, render

    skel = skin.skeleton
    colours = joint_colours(skel)
    blend = np.einsum("nk,nkc->nc", skin.weights.astype(np.float64), colours[skin.joint_index])
    tint = 0.6 * blend + 0.4 * 235.0
    shown = trimesh.Trimesh(
        vertices, faces, vertex_colors=np.clip(tint, 0, 255).astype(np.uint8), process=False
    )
    rgb = render(shown, size=size, view=view)

    # render()'s projection: orthographic along camera(view), the screen box of the
    # vertices scaled to MARGIN of the frame and centred; y points down on screen.
    rot = camera(view)
    v = np.asarray(vertices, np.float64) @ rot.T
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    scale = MARGIN * size / max(float((hi - lo).max()), 1e-9)
    centre = (lo + hi) / 2
    j = skel.positions @ rot.T
    xy = np.column_stack(
        [(j[:, 0] - centre[0]) * scale + size / 2, size / 2 - (j[:, 1] - centre[1]) * scale]
    )

    k = 4  # drawn k times larger and shrunk: smooth lines
    overlay = Image.new("RGBA", (size * k, size * k), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    p = xy * k
    line, dot = max(2, size // 170) * k, max(3, size // 110) * k
    for child in range(1, len(p)):
        a, b = tuple(p[skel.parents[child]]), tuple(p[child])
        draw.line([a, b], fill=(30, 30, 35, 255), width=line + 2 * k)
    for child in range(1, len(p)):
        a, b = tuple(p[skel.parents[child]]), tuple(p[child])
        c = colours[skel.parents[child]] if skel.parents[child] else colours[child]
        draw.line([a, b], fill=(*(int(x) for x in c), 255), width=line)
    for i, (x, y) in enumerate(p):
        r = dot * (1.5 if i == 0 else 1.0)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255, 255),
                     outline=(30, 30, 35, 255), width=k)  # fmt: skip
    overlay = overlay.resize((size, size), Image.Resampling.BOX)
    base = Image.fromarray(rgb).convert("RGBA")
    return np.asarray(Image.alpha_composite(base, overlay).convert("RGB"))


# ---------------------------------------------------------------------------- adapter


def _visuals(mesh: Any) -> dict[str, Any]:
    """What of the input's look the GLB can carry: UVs with the base colour picture, or
    vertex colours, or a flat base colour. glTF multiplies the colour factor into the
    picture and the vertex colours, so with either the factor is white unless given."""
    import io

    visual = mesh.visual
    out: dict[str, Any] = {}
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = getattr(material, "baseColorTexture", None)
        if image is None:
            image = getattr(material, "image", None)
        factor = getattr(material, "baseColorFactor", None)
        if factor is None:
            factor = getattr(material, "diffuse", None)  # SimpleMaterial (OBJ)
        if factor is not None:
            f = np.asarray(factor)
            f = f / 255.0 if f.dtype.kind in "ui" else f.astype(np.float64)
            out["base_colour"] = (*(float(x) for x in f[:3]), float(f[3]) if len(f) > 3 else 1.0)
        elif image is not None:
            out["base_colour"] = (1.0, 1.0, 1.0, 1.0)
        if image is not None:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            out["uv"], out["texture_png"] = np.asarray(visual.uv, np.float64), buf.getvalue()
    elif visual.kind in ("vertex", "face"):
        out["colours"] = np.asarray(visual.vertex_colors, np.uint8)
        out["base_colour"] = (1.0, 1.0, 1.0, 1.0)
    return out


class RigAdapter(Adapter):
    """Nothing to load: a CPU backend that runs anywhere."""

    tasks = ("rig",)
    accepts = ("mesh",)
    requires = ("mesh",)
    Params = RigParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        params = RigParams.model_validate(item.params)
        mesh = item.mesh
        t0 = time.perf_counter()
        vertices, faces = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces)
        skin, info = rig(vertices, faces, params)
        t1 = time.perf_counter()
        skel = skin.skeleton
        glb = skinned_glb(
            vertices,
            faces,
            np.asarray(mesh.vertex_normals),
            skel.positions,
            skel.parents,
            skel.names,
            skin.joint_index,
            skin.weights,
            **_visuals(mesh),
        )
        t2 = time.perf_counter()
        preview = bone_preview(vertices, faces, skin)
        t3 = time.perf_counter()
        info["seconds"].update(
            glb=round(t2 - t1, 4), preview=round(t3 - t2, 4), total=round(t3 - t0, 4)
        )
        return Result(
            mesh=mesh,
            artifacts=[Artifact("rigged.glb", glb)],
            mesh_artifact="rigged.glb",
            preview_rgb=preview,
            info=info,
        )
