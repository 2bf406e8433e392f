"""builtin-parts' thickness: the shape diameter per face, by shrinking balls, so that a
thin limb leaving a thick body is a place to cut."""

from __future__ import annotations

import numpy as np

from adapters.builtin.parts.graph import SEED, FaceGraph, adjacency
from geometry.measures import face_areas

SAMPLES = 8_000  # surface points the shape diameter is measured against
ORIGINS = 1_500  # of which this many are where it is measured
EPS = 0.1  # nearest-sample queries may return one up to 10 % farther (speed)


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
    adj = adjacency(graph.n, graph.pairs, graph.length)
    own = np.maximum(np.asarray(adj.sum(axis=1)).ravel(), 1e-300)
    out = values
    for _ in range(rounds):
        out = 0.5 * out + 0.5 * (adj @ out) / own
    return out
