"""Long edges cut short, two ways.

A sliver spanning a whole limb (boolean unions and CAD leave them) gives a surface
graph nowhere to cut across it and a Laplacian bad cotangents. ``halve_long_edges``
halves every long edge round after round and remembers which input face each new one
lies in (the parts backend votes with that); ``cut_long_edges`` cuts each long edge into
equal parts at once and zips every cut face into a ladder, about two triangles per part
where halving makes three per halving, and keeps the input points at their indices (the
rig backend's weights come back to them exactly). Both keep the surface conforming (an
edge is cut the same way in both of its faces: no T-junctions).
"""

from __future__ import annotations

import math

import numpy as np

from geometry.edges import edge_keys, edge_table


def halve_long_edges(
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
            edge_keys(tris, len(points)), return_index=True, return_inverse=True
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


def cut_long_edges(
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
        uniq, inv, _ = edge_table(f, len(v))
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
