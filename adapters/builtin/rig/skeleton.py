"""builtin-rig's skeleton: the Reeb tree's paths between branch points as chains of
joints, named by direction, pulled inside the surface."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adapters.builtin.rig.body import centre_of_mass, winding_number
from adapters.builtin.rig.reeb import prune, reeb_tree

SEED_RADIUS = 1.5  # root ring: surface within this many times the nearest distance of the centre


@dataclass
class Skeleton:
    """A joint tree in bind pose: joint 0 is the root, parents precede their children."""

    positions: np.ndarray  # (J, 3)
    parents: np.ndarray  # (J,) int, -1 for the root
    names: list[str]
    chains: list[tuple[str, list[int]]] = field(default_factory=list)


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
