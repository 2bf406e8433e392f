"""builtin-parts: a mesh split into parts on the CPU, along its concave creases.

The pipeline, each step a function over numpy arrays (I/O stays in the adapter):

1. ``weld``, ``orient``: faces are joined at coincident corners (UV seams, STL soup)
   so the surface is one graph, and wound one way, outward (a flipped face would turn
   its convex edges concave).
2. ``proxy_mesh``: the parts are found on a copy of about 4,000 well-shaped faces:
   decimated when the input is dense; long edges split, then collapsed back to size,
   when it has slivers (boolean unions and CAD leave triangles spanning a whole limb,
   with nowhere to cut across it).
3. ``face_graph``: the dual graph, one node per face, one edge per shared mesh edge,
   with its length, the path between the two centroids and the dihedral angle.
4. ``face_thickness``: the shape diameter function, estimated by shrinking balls (Ma et
   al. 2012) rather than cones of rays: a ball touching the surface from inside
   shrinks until no surface sample is in it; its diameter is the local thickness that
   the SDF's rays measure, for a dozen nearest-sample queries at 1,500 points.
5. ``affinities``: the conductance of each dual edge (length over centroid distance,
   so the graph behaves like the surface whatever its triangles), damped across
   concave creases (the minima rule, weighted the way Katz and Tal, and Liu and Zhang,
   weight their angular distance: concave edges much more than convex ones) and
   across changes of thickness, where a thin limb leaves a thick body.
6. ``spectral_embedding``: the smallest eigenpairs of that Laplacian normalised by the
   face areas (``eigsh`` in shift-invert mode). A crease ring nearly cuts the graph, so
   each part adds one eigenvalue near zero; without ``parts``, their count is where the
   spectrum jumps (``eigengap_parts``). Separate shells too small to be parts
   (``main_shells``) stay out of it and join the nearest part.
7. ``cluster``: k-means on the row-normalised eigenvectors (Ng, Jordan and Weiss),
   best of several seeded restarts, so the same mesh always gives the same parts.
8. ``connected_parts``: a label that fell apart is split, and islands too small to be
   parts are merged into the neighbour they share most boundary with.
9. ``refine_boundaries``: each boundary is recut by a minimum cut inside a band around
   it (Katz and Tal's fuzzy region), edge costs being length times crease damping: the
   cut snaps to the concave crease when there is one, else takes the shortest way round.
10. Labels go back to the input's faces (the vote of a split face's pieces, or the
    nearest proxy face, then recut at full resolution), parts are merged down to the
    count asked for (or 32), and ``parts_scene`` makes one Scene node per part.

Parts are made of the input's faces: a sliver running the length of a limb cannot be
cut across, so asking for more parts than the creases suggest on such a mesh gives
ragged boundaries.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters import surface
from adapters.base import Adapter, Artifact, InputError, Item, Result

MAX_PARTS = 32
PROXY_FACES = 4_000  # size of the copy the parts are found on
CONCAVE = 0.2  # 1 - cos(dihedral) over which a concave crease's affinity falls by e
CONVEX_SHARE = 0.05  # convex creases count this much of a concave one (Katz and Tal: 0.1-0.2)
THICKNESS = 0.2  # change of log-thickness across an edge over which its affinity falls by e
SHELL_SHARE = 0.01  # a separate shell under this share of the area is no part by itself
DENSE_EIGEN = 600  # graphs up to this size take the dense eigensolver
MIN_PART_SHARE = 0.004  # an island under this share of the total area is no part
MIN_ISLAND_SHARE = 0.15  # a piece under this share of its label's largest piece is an island
BAND = 2.5  # half width of the band a boundary is recut in, in proxy edge lengths
RESTARTS = 8  # k-means restarts (k-means++ each)
SEED = 0
SAMPLES = 8_000  # surface points the shape diameter is measured against
ORIGINS = 1_500  # of which this many are where it is measured
EPS = 0.1  # nearest-sample queries may return one up to 10 % farther (speed)


class PartsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: int | None = Field(
        None, ge=2, le=MAX_PARTS, description="number of parts; chosen from the shape if unset"
    )


# ---------------------------------------------------------------------------- surface


def weld(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, triangles, which input faces they are): coincident corners joined.

    Faces that collapse (two corners on one point) and repeats of a face are left out
    of the graph; they take a neighbour's part at the end.
    """
    # Corners within 2^-21 of the longest side are one point.
    points, tris, _, kept = surface.weld(vertices, faces, bits=21)
    # Repeats: equal corner sets, found side by side when sorted by a hash of them.
    corners = np.sort(tris, axis=1).astype(np.uint64)
    with np.errstate(over="ignore"):
        mix = (
            (corners[:, 0] * np.uint64(0x9E3779B97F4A7C15))
            ^ (corners[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F))
            ^ (corners[:, 2] * np.uint64(0x165667B19E3779F9))
        )
    order = np.argsort(mix, kind="stable")
    again = (corners[order[1:]] == corners[order[:-1]]).all(axis=1)
    repeat = np.zeros(len(kept), bool)
    repeat[order[1:][again]] = True
    return points, tris[~repeat], kept[~repeat]


def orient(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Faces wound consistently within each connected piece, outward: a few flipped
    faces, or a shell inside out, would otherwise turn convex edges concave. A closed
    piece goes by the sign of its volume; an open one keeps the winding most of its
    faces had. A mesh wound consistently already (each edge run once each way) is
    only checked for being inside out."""
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
    _, where, uses = np.unique(
        surface.edge_keys(fixed, len(points)), return_inverse=True, return_counts=True
    )
    open_face = (uses[where.reshape(-1, 3)] != 2).any(axis=1)
    closed = np.bincount(comp, weights=open_face, minlength=pieces) == 0
    a, b, c = points[fixed[:, 0]], points[fixed[:, 1]], points[fixed[:, 2]]
    volume = np.bincount(comp, weights=np.einsum("ij,ij->i", a, np.cross(b, c)), minlength=pieces)
    undo = np.where(closed, volume < 0, undo)
    return np.where(undo[comp][:, None], fixed[:, ::-1], fixed)


def face_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


@dataclass
class Proxy:
    """The surface the parts are found on and how its faces map to the input's."""

    points: np.ndarray
    tris: np.ndarray
    edge: float  # the edge length of the proxy's triangles, about
    parent: np.ndarray | None  # input face of each proxy face when split, else None
    decimated: bool


def proxy_mesh(points: np.ndarray, tris: np.ndarray, *, target_faces: int) -> Proxy:
    """A copy of about ``target_faces`` well-shaped faces.

    A dense input is decimated (fast_simplification). Long edges are then split until
    none is over three times the edge of an even tiling (a sliver spanning a limb leaves
    nowhere to cut it, a box of twelve triangles nowhere at all), and when that made
    many faces, shortest-edge collapse (libigl) brings them back to the target: it
    leaves well-shaped triangles, though a sharp crease gets a chamfer about one proxy
    edge wide (two bends of half the angle, which the crease weights still see).
    """
    area = float(face_areas(points, tris).sum())
    edge = float(np.sqrt(4.0 * area / (np.sqrt(3.0) * target_faces)))
    decimated = False
    if len(tris) > 1.5 * target_faces:
        import fast_simplification

        p, t = fast_simplification.simplify(points, tris, target_count=target_faces)
        points, tris, _ = weld(p, np.asarray(t, np.int64))
        decimated = True
    points, tris, parent = split_long_edges(points, tris, 3.0 * edge, budget=40 * target_faces)
    if len(tris) > 1.5 * target_faces:
        p, t = _collapse(points, tris, target_faces)
        points, tris, _ = weld(p, t)
        decimated = True
    if decimated:  # collapses can leave flat slivers of no area: no surface, no node
        tris = tris[face_areas(points, tris) > 1e-9 * area / len(tris)]
    return Proxy(points, tris, edge, None if decimated else parent, decimated)


def _collapse(points: np.ndarray, tris: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Shortest-edge collapse (libigl) where the surface is edge-manifold, as it needs;
    else, or when it stops far from the target, quadric decimation."""
    import fast_simplification

    _, uses = np.unique(surface.edge_keys(tris, len(points)), return_counts=True)
    if uses.max() <= 2:
        import igl

        p, t, _, _ = igl.decimate(points, tris.astype(np.int32), target)
        if 0.5 * target <= len(t) <= 1.5 * target:
            return np.asarray(p, np.float64), np.asarray(t, np.int64)
    p, t = fast_simplification.simplify(points, tris, target_count=target)
    return np.asarray(p, np.float64), np.asarray(t, np.int64)


def split_long_edges(
    points: np.ndarray, tris: np.ndarray, max_len: float, *, budget: int, rounds: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, triangles, parent triangle): every edge over ``max_len`` halved, round
    after round, until none is left or there are ``budget`` faces. An edge is split in
    both its faces, so the surface stays conforming (no T-junctions) and the dual
    graph connected."""
    parent = np.arange(len(tris))
    for _ in range(rounds):
        if len(tris) >= budget:
            break
        corner = np.stack([tris, np.roll(tris, -1, axis=1)], axis=2)  # (F, 3, 2): edge j
        lengths = np.linalg.norm(points[corner[..., 0]] - points[corner[..., 1]], axis=2)
        if not (lengths > max_len).any():
            break
        keys, first, edge_id = np.unique(
            surface.edge_keys(tris, len(points)), return_index=True, return_inverse=True
        )
        edge_id = edge_id.reshape(-1, 3)
        split = np.zeros(len(keys), bool)
        split[edge_id[lengths > max_len]] = True
        mid_index = np.cumsum(split) - 1 + len(points)
        ends = corner.reshape(-1, 2)[first[split]]
        points = np.concatenate([points, points[ends].mean(axis=1)])
        mask = split[edge_id]  # (F, 3)
        mids = np.where(mask, mid_index[edge_id], -1)
        count = mask.sum(axis=1)
        new_tris, new_parent = [tris[count == 0]], [parent[count == 0]]
        for c in (1, 2, 3):
            sel = np.flatnonzero(count == c)
            if not len(sel):
                continue
            # Rotate so that edge 0 is the split one (one split), the unsplit one (two).
            first = mask[sel].argmax(axis=1) if c == 1 else (~mask[sel]).argmax(axis=1)
            rot = (np.arange(3)[None, :] + first[:, None]) % 3
            a, b, d = (tris[sel[:, None], rot][:, i] for i in range(3))
            m = mids[sel[:, None], rot]  # m[:, j]: midpoint of edge j (from corner j)
            if c == 1:
                parts = [(a, m[:, 0], d), (m[:, 0], b, d)]
            elif c == 2:  # the quad a, b, m1, m2 split along its shorter diagonal
                m1, m2 = m[:, 1], m[:, 2]
                via_a = np.linalg.norm(points[a] - points[m1], axis=1) <= np.linalg.norm(
                    points[b] - points[m2], axis=1
                )
                parts = [
                    (a, b, np.where(via_a, m1, m2)),
                    (np.where(via_a, a, b), m1, m2),
                    (m1, d, m2),
                ]
            else:
                parts = [
                    (a, m[:, 0], m[:, 2]),
                    (m[:, 0], b, m[:, 1]),
                    (m[:, 2], m[:, 1], d),
                    (m[:, 0], m[:, 1], m[:, 2]),
                ]
            for tri in parts:
                new_tris.append(np.column_stack(tri))
                new_parent.append(parent[sel])
        tris, parent = np.concatenate(new_tris), np.concatenate(new_parent)
    return points, tris, parent


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


def _adjacency(n: int, pairs: np.ndarray, weights: np.ndarray) -> Any:
    from scipy import sparse

    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return sparse.csr_matrix((np.concatenate([weights, weights]), (rows, cols)), shape=(n, n))


# ---------------------------------------------------------------------------- thickness


def surface_samples(
    points: np.ndarray, tris: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(points, their faces): ``count`` points spread over the surface by area, in random
    order, so any prefix is spread too (seeded: the same every time)."""
    rng = np.random.default_rng(SEED)
    area = face_areas(points, tris)
    face = rng.choice(len(tris), size=count, p=area / area.sum())
    u, v = rng.random((2, count))
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    a, b, c = (points[tris[face, i]] for i in range(3))
    return a + u[:, None] * (b - a) + v[:, None] * (c - a), face


def face_thickness(graph: FaceGraph, points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Log shape diameter per face: measured at a few thousand points spread over the
    surface, read at each face from its nearest such points facing the same way (not
    across a thin gap), then smoothed along the surface."""
    from scipy.spatial import cKDTree

    samples, face = surface_samples(points, tris, SAMPLES)
    origins, normals = samples[:ORIGINS], graph.normals[face[:ORIGINS]]
    log_d = np.log(shape_diameter(origins, normals, samples))
    k = min(6, len(origins))
    dist, near = cKDTree(origins).query(graph.centroids, k=k)
    dist, near = dist.reshape(len(dist), k), near.reshape(len(near), k)
    facing = np.einsum("ij,ikj->ik", graph.normals, normals[near])
    w = np.maximum(facing, 0.0) / (dist + 1e-3 * np.sqrt(graph.areas.sum())) + 1e-9
    return smooth_on_graph((w * log_d[near]).sum(axis=1) / w.sum(axis=1), graph)


def shape_diameter(
    origins: np.ndarray, normals: np.ndarray, samples: np.ndarray, *, iterations: int = 12
) -> np.ndarray:
    """Per origin (a point on the surface, outward ``normals``), the diameter of the
    largest ball inside the shape that touches the surface there.

    Shrinking balls: a ball tangent at p (centre p - r n) shrinks to pass through the
    surface sample q nearest its centre, r = |p - q|^2 / (2 (p - q) . n), until no
    sample is inside. Samples spread evenly by area, not the faces themselves: a long
    sliver's centroid says nothing about the surface along it. The nearest-sample
    query is approximate (within 10 %): a ball centre equidistant from everything (the
    middle of a sphere) would otherwise visit every sample.
    """
    from scipy.spatial import cKDTree

    n = len(origins)
    size = float(np.ptp(samples, axis=0).max()) if len(samples) else 1.0
    # Any sample bounds the ball from above; the least of a few hundred starts it small,
    # so the searches below stay local.
    few = samples[:: max(1, len(samples) // 256)]
    diff = origins[:, None, :] - few[None, :, :]
    denom = 2.0 * np.einsum("ijk,ik->ij", diff, normals)
    reach = np.einsum("ijk,ijk->ij", diff, diff) / np.maximum(denom, 1e-300)
    bound = np.where(denom > 0, reach, size)
    r = np.minimum(bound.min(axis=1), 0.5 * size)
    tree = cKDTree(samples)
    active = np.arange(n)
    for _ in range(iterations):
        if not len(active):
            break
        p, nrm = origins[active], normals[active]
        dist, q = tree.query(p - r[active, None] * nrm, eps=EPS)
        diff = p - samples[q]
        denom = 2.0 * np.einsum("ij,ij->i", diff, nrm)
        r_new = np.einsum("ij,ij->i", diff, diff) / np.maximum(denom, 1e-300)
        shrink = (denom > 0) & (dist < r[active]) & (r_new < r[active] * (1 - 1e-6))
        r[active[shrink]] = np.maximum(r_new[shrink], 1e-6 * size)
        active = active[shrink]
    return 2.0 * r


def smooth_on_graph(values: np.ndarray, graph: FaceGraph, rounds: int = 2) -> np.ndarray:
    """Each round, half a face's own value and half its neighbours' mean (weighted by
    shared edge length): estimation noise goes, a jump between parts stays a step."""
    adj = _adjacency(graph.n, graph.pairs, graph.length)
    own = np.maximum(np.asarray(adj.sum(axis=1)).ravel(), 1e-300)
    out = values
    for _ in range(rounds):
        out = 0.5 * out + 0.5 * (adj @ out) / own
    return out


# ---------------------------------------------------------------------------- spectra


def affinities(graph: FaceGraph, thickness: np.ndarray | None) -> np.ndarray:
    """Per dual edge: conductance times crease damping times thickness damping."""
    w = graph.length / graph.span * graph.crease()
    if thickness is not None:  # log shape diameter per face
        t = thickness
        w = w * np.exp(-np.abs(t[graph.pairs[:, 0]] - t[graph.pairs[:, 1]]) / THICKNESS)
    return w


def spectral_embedding(
    graph: FaceGraph, weights: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, vectors): the ``count`` smallest of M^-1/2 L M^-1/2, M = face areas."""
    from scipy import sparse
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    n = graph.n
    w = _adjacency(n, graph.pairs, weights)
    lap = sparse.diags(np.asarray(w.sum(axis=1)).ravel()) - w
    mass = np.maximum(graph.areas / graph.areas.mean(), 1e-3)
    s = sparse.diags(1.0 / np.sqrt(mass))
    sym = (s @ lap @ s).tocsc()
    scale = float(sym.diagonal().mean())
    if n <= DENSE_EIGEN:
        from scipy.linalg import eigh

        vals, vecs = eigh(sym.toarray())
        return vals[:count] / scale, vecs[:, :count]
    v0 = np.random.default_rng(SEED).standard_normal(n)
    want = min(count, n - 2)
    try:
        vals, vecs = eigsh(sym, k=want, sigma=-1e-4 * scale, which="LM", v0=v0)
    except ArpackNoConvergence:  # clustered eigenvalues: more room, a looser tolerance
        try:
            vals, vecs = eigsh(
                sym, k=want, sigma=-1e-4 * scale, which="LM", v0=v0, ncv=min(n, 4 * want), tol=1e-6
            )
        except ArpackNoConvergence as exc:
            if len(exc.eigenvalues) < 3:
                raise
            vals, vecs = exc.eigenvalues, exc.eigenvectors
    order = np.argsort(vals)
    return vals[order] / scale, vecs[:, order]


def eigengap_parts(values: np.ndarray) -> int:
    """How many parts the spectrum suggests: the k before its largest jump.

    Jumps are measured in sqrt(eigenvalue), an inverse length: a crease-bounded part
    adds an eigenvalue near zero, the first one that varies inside a part is of the
    order of 1 / (its length)^2, and in sqrt the spacing of the latter does not grow
    with k the way the eigenvalues do (Weyl), so a late ordinary gap cannot win.
    """
    root = np.sqrt(np.maximum(values, 0.0))
    top = min(len(root) - 1, MAX_PARTS)
    if top < 2:
        return 2
    ks = np.arange(2, top + 1)
    return int(ks[np.argmax(root[ks] - root[ks - 1])])


def cluster(
    vectors: np.ndarray, k: int, weights: np.ndarray, *, restarts: int = RESTARTS
) -> np.ndarray:
    """k-means on the row-normalised embedding (weighted by face area); the best of
    seeded restarts, each started by k-means++."""
    x = vectors[:, :k]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(SEED)
    best, best_cost = np.zeros(len(x), np.int64), np.inf
    for _ in range(restarts):
        labels, cost = kmeans(x, k, weights, rng)
        if cost < best_cost:
            best, best_cost = labels, cost
    return best


def kmeans(
    x: np.ndarray, k: int, weights: np.ndarray, rng: np.random.Generator, *, iterations: int = 100
) -> tuple[np.ndarray, float]:
    """(labels, weighted sum of squared distances): Lloyd's iterations from k-means++."""
    from scipy import sparse

    n = len(x)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.choice(n, p=weights / weights.sum())]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        p = weights * d2
        total = p.sum()
        centres[i] = x[rng.choice(n, p=p / total) if total > 0 else rng.integers(n)]
        d2 = np.minimum(d2, ((x - centres[i]) ** 2).sum(axis=1))
    labels = np.full(n, -1)
    sq = (x * x).sum(axis=1)
    for _ in range(iterations):
        dist = sq[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(axis=1)[None, :]
        new = dist.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        mass = np.bincount(labels, weights=weights, minlength=k)
        for j in np.flatnonzero(mass <= 0):  # an empty cluster takes the worst-fit point
            far = int(np.argmax(dist[np.arange(n), labels] * weights))
            labels[far], mass[j] = j, weights[far]
        member = sparse.csr_matrix((weights, (labels, np.arange(n))), shape=(k, n))
        centres = (member @ x) / np.maximum(mass, 1e-300)[:, None]
    dist = sq[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(axis=1)[None, :]
    cost = float((weights * np.maximum(dist[np.arange(n), labels], 0.0)).sum())
    return labels, cost


# ---------------------------------------------------------------------------- clean-up


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
            _adjacency(graph.n, graph.pairs, graph.span), indices=starts, min_only=True, limit=band
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
        span = _adjacency(n, graph.pairs[sub], graph.span[sub])
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


# ---------------------------------------------------------------------------- pipeline


def segment(
    vertices: np.ndarray, faces: np.ndarray, params: PartsParams
) -> tuple[np.ndarray, dict[str, Any]]:
    """(label per input face, 0 = the largest part; numbers worth recording)."""
    from scipy.spatial import cKDTree

    clock = [time.perf_counter()]
    faces = np.asarray(faces, np.int64)
    if params.parts is not None and params.parts > len(faces):
        raise InputError(
            f"cannot split {len(faces)} faces into {params.parts} parts; ask for at most"
            f" {len(faces)} or leave `parts` unset to choose from the shape"
        )
    points, tris, kept = weld(vertices, faces)
    tris = orient(points, tris)
    if len(tris) < 2:
        raise InputError("mesh has fewer than two non-degenerate faces; nothing to split")
    proxy = proxy_mesh(points, tris, target_faces=PROXY_FACES)
    graph = face_graph(proxy.points, proxy.tris)
    clock.append(time.perf_counter())

    weights = affinities(graph, face_thickness(graph, proxy.points, proxy.tris))
    clock.append(time.perf_counter())

    shells = main_shells(graph)
    main, kept_edges = subgraph(graph, shells) if not shells.all() else (graph, None)
    if kept_edges is not None:
        weights = weights[kept_edges]
    values, vectors = spectral_embedding(main, weights, MAX_PARTS + 1)
    k = params.parts if params.parts is not None else eigengap_parts(values)
    k = min(k, main.n)
    labels = np.empty(graph.n, np.int64)
    labels[shells] = cluster(vectors, k, main.areas)
    if not shells.all():
        _, near = cKDTree(main.centroids).query(graph.centroids[~shells])
        labels[~shells] = labels[shells][near]
    clock.append(time.perf_counter())

    band = BAND * proxy.edge
    labels = connected_parts(graph, labels)
    labels = connected_parts(graph, refine_boundaries(graph, labels, band))
    # Back to the input's faces: by vote of their pieces, or by the nearest proxy face.
    if proxy.parent is None and not proxy.decimated:
        full = graph
    else:
        full = face_graph(points, tris)
        if proxy.parent is not None:
            votes = np.zeros((len(tris), labels.max() + 1))
            np.add.at(votes, (proxy.parent, labels), graph.areas)
            labels = connected_parts(full, votes.argmax(axis=1))
        else:
            _, near = cKDTree(graph.centroids).query(full.centroids)
            labels = connected_parts(full, labels[near])
            # The nearest proxy face misplaces a boundary by up to about a proxy edge.
            labels = connected_parts(full, refine_boundaries(full, labels, proxy.edge))
    labels = merge_to_count(full, labels, params.parts or MAX_PARTS)
    clock.append(time.perf_counter())

    out = np.empty(len(faces), np.int64)
    out[kept] = labels
    if len(kept) < len(faces):  # collapsed faces go with the nearest face that is not
        lost = np.setdiff1d(np.arange(len(faces)), kept)
        v = np.asarray(vertices, np.float64)
        _, near = cKDTree(v[faces[kept]].mean(axis=1)).query(v[faces[lost]].mean(axis=1))
        out[lost] = labels[near]
    out = compact(out, face_areas(np.asarray(vertices, np.float64), faces) + 1e-30)
    counts = np.bincount(out)
    info = {
        "parts": int(len(counts)),
        "part_faces": [int(c) for c in counts],
        "parts_requested": params.parts,
        "clusters": int(k),
        "proxy_faces": int(graph.n),
        # sqrt of the smallest eigenvalues over that of the first past the parts: well
        # under 1 for parts that creases separate, near 1 for ones cut from a smooth whole.
        "spectrum": [
            round(float(x), 3)
            for x in np.sqrt(
                np.maximum(values[: k + 2], 0.0) / max(values[min(k, len(values) - 1)], 1e-300)
            )
        ],
        "seconds": {
            stage: round(float(dt), 4)
            for stage, dt in zip(
                ("proxy", "affinity", "spectral", "cleanup"), np.diff(clock), strict=True
            )
        },
    }
    return out.astype(np.int32), info


def parts_scene(mesh: Any, labels: np.ndarray) -> Any:
    """A Scene with one node and geometry per part, "part_0" (the largest) onwards;
    each part keeps the input's visuals (UVs and texture, or colours) for its faces."""
    import trimesh

    scene = trimesh.Scene()
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    pieces = mesh.submesh(
        [order[bounds[i] : bounds[i + 1]] for i in range(labels.max() + 1)],
        append=False,
        only_watertight=False,
    )
    for i, piece in enumerate(pieces):
        scene.add_geometry(piece, node_name=f"part_{i}", geom_name=f"part_{i}")
    return scene


def _plain(scene: Any) -> Any:
    """The same parts without their visuals, so a preview paints one colour per part."""
    import trimesh

    out = trimesh.Scene()
    for name, geom in scene.geometry.items():
        out.add_geometry(
            trimesh.Trimesh(geom.vertices, geom.faces, process=False),
            node_name=name,
            geom_name=name,
        )
    return out


# ---------------------------------------------------------------------------- adapter


class PartsAdapter(Adapter):
    """Nothing to load and no device to hold: it runs anywhere."""

    tasks = ("segment",)
    accepts = ("mesh",)
    requires = ("mesh",)
    Params = PartsParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        params = PartsParams.model_validate(item.params)
        t0 = time.perf_counter()
        mesh = item.mesh
        labels, info = segment(np.asarray(mesh.vertices), np.asarray(mesh.faces), params)
        t1 = time.perf_counter()
        scene = parts_scene(mesh, labels)
        glb = scene.export(file_type="glb")
        buf = io.BytesIO()
        np.save(buf, labels.astype(np.int32), allow_pickle=False)
        info["seconds"]["export"] = round(time.perf_counter() - t1, 4)
        info["seconds"]["total"] = round(time.perf_counter() - t0, 4)
        # The preview is drawn from Result.mesh: the same parts without the input's
        # texture or colours, so each part shows in a colour of its own.
        return Result(
            mesh=_plain(scene),
            artifacts=[Artifact("parts.glb", glb), Artifact("labels.npy", buf.getvalue())],
            mesh_artifact="parts.glb",
            info=info,
        )
