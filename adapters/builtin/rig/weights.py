"""builtin-rig's skin weights: bone heat on the surface, brought back to the input's
vertices and limited to a few influences each."""

from __future__ import annotations

import numpy as np

from adapters.builtin.rig.skeleton import Skeleton

MIN_WEIGHT = 0.01  # influences below this are dropped before renormalising
HEAT = 1.0  # bone heat constant c in H = c / d^2 (Baran and Popovic use 1)


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


def vertex_normals(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    face = np.cross(b - a, c - a)  # area-weighted
    out = np.zeros_like(points)
    for corner in range(3):
        np.add.at(out, tris[:, corner], face)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)
