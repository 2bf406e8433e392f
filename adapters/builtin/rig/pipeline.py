"""builtin-rig: a mesh to a skinned GLB on the CPU: a joint tree and bone-heat weights.

The pipeline, each step a function over numpy arrays (I/O stays in the adapter):

1. ``geometry.weld`` and ``body.split_bodies``: vertices split at UV seams are joined
   so the surface is one connected graph; the largest body is rigged, small separate
   pieces (eyes, a sword) follow the body point nearest to them rigidly, and several
   bodies of comparable size are refused (one character per job).
2. ``geometry.proxy.bounded_proxy``: skeleton and weights are computed on a copy of
   bounded size and edge length: decimated (fast_simplification) when large, long edges
   cut by ``geometry.split.cut_long_edges`` when coarse (boolean unions and CAD leave
   long slivers, which would leave gaps between the level sets below and spoil the
   cotangent Laplacian).
3. ``skeleton.skeleton``: a Reeb graph (``reeb``) of the geodesic distance from a ring of
   surface around the centre of mass. Each band of that distance splits into connected
   pieces: on a limb a ring, whose centroid lies on the limb's axis; where limbs meet,
   the ring splits. The pieces form a tree from the root out to every extremity; side
   branches shorter than the body is thick where they start (bumps, noise) are pruned,
   and each path between branch points becomes a chain of joints about ``bone_length``
   apart. A joint that lands outside (the centroid of a ring about to split at a crotch
   sits between the legs) is moved along its bone back inside.
4. ``weights.bone_heat``: Baran and Popovic's bone heat on the surface,
   (-L + H) w_j = H p_j with the cotangent Laplacian L (libigl), H = 1/d^2 to the
   vertex's bone and p_j = 1 where that bone belongs to joint j (a bone drives the joint
   it starts from). A vertex's bone is the nearest among those through its own Reeb
   piece and its neighbours: the surface decides, so a hand resting on a hip still
   binds to the arm.
5. ``weights.transfer`` (decimated proxies only) and ``weights.limit_influences``:
   weights back on the input's vertices, the 4 largest kept and renormalised in
   float32; every vertex keeps at least one.

Joints get direction names: a chain ending in an extremity is named for where that
extremity lies from the root ("up", "left", "right", "down.L", "down.R" on a T-posed
figure, which faces +Z so its left is +X), a chain between branch points "trunk_<dir>".
A shape with no limbs (a round blob) gets the root joint alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.builtin.rig.body import split_bodies
from adapters.builtin.rig.skeleton import Skeleton, skeleton
from adapters.builtin.rig.weights import bone_heat, limit_influences, transfer, vertex_normals
from geometry.proxy import bounded_proxy
from geometry.weld import grid_keys, weld

BAND_EDGES = 1.5  # distance bands this many proxy edge limits wide: rings stay connected


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
class Rig:
    skeleton: Skeleton
    joint_index: np.ndarray  # (N, 4) per input vertex
    weights: np.ndarray  # (N, 4) float32, rows sum to one


def rig(vertices: np.ndarray, faces: np.ndarray, params: RigParams) -> tuple[Rig, dict[str, Any]]:
    """Skeleton and skin weights for a mesh's vertices, plus the numbers worth recording."""
    from scipy.spatial import cKDTree

    clock = [time.perf_counter()]
    points, tris, index, _ = weld(vertices, faces, grid_keys(vertices, 20))
    labels, main = split_bodies(points, tris)
    body = tris[labels[tris[:, 0]] == main]
    body_points = np.unique(body)
    compact = np.full(len(points), -1, dtype=np.int64)
    compact[body_points] = np.arange(len(body_points))
    bp, bf = points[body_points], compact[body]
    clock.append(time.perf_counter())

    pp, pf, max_len, decimated = bounded_proxy(bp, bf, target_faces=params.proxy_faces)
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
        w_points[body_points] = transfer(
            bp, vertex_normals(bp, bf), pp, vertex_normals(pp, pf), w_proxy
        )
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
