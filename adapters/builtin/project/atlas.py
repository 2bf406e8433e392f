"""builtin-project's UV atlas: box-projected charts, packed by xatlas.

Each face goes to the axis direction it faces most (smoothed over its neighbours), a
chart is a connected run of one direction laid out by projecting along it: no triangle
flips, the front charts are the picture's own pixel grid, and it costs linear time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adapters.builtin.project.visibility import depth_image, in_front
from geometry.weld import position_ids

# The six directions charts are seen along, as frames with rows (right, up, toward the
# viewer), right x up = toward: a face facing the viewer keeps its winding in UV.
AXES = np.array(
    [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],  # +Z, the front: the picture's own axes
        [[-1, 0, 0], [0, 1, 0], [0, 0, -1]],  # -Z, the back, as if seen in a mirror
        [[0, 0, -1], [0, 1, 0], [1, 0, 0]],  # +X
        [[0, 0, 1], [0, 1, 0], [-1, 0, 0]],  # -X
        [[1, 0, 0], [0, 0, -1], [0, 1, 0]],  # +Y, the top
        [[1, 0, 0], [0, 0, 1], [0, -1, 0]],  # -Y
    ],
    dtype=float,
)
MIN_FACING = 0.4  # smoothing may move a face to a direction at most ~66 degrees off its own
SMOOTHING_ROUNDS = 3
CHART_DEPTH_PX = 256  # depth maps that find faces hidden behind others of their chart


@dataclass
class UVAtlas:
    vmap: np.ndarray  # (M,) the input vertex under each atlas vertex (seams split them)
    faces: np.ndarray  # (F, 3) into the atlas vertices, in the input's face order
    uv: np.ndarray  # (M, 2) in [0, 1], v up (trimesh's convention)
    charts: int
    utilisation: float


def box_charts(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F,) chart id per face and (F, 3, 2) UV per corner, in mesh units, before packing.

    Each face goes to the axis direction (+-X, +-Y, +-Z) it faces most, smoothed over its
    neighbours so that noise does not scatter one-face charts; a chart is a connected
    run of faces of one direction, seen along it, and is laid out by projecting along
    it: every face faces the viewer, so no triangle flips, and the +Z charts are the
    picture's own pixel grid. Faces that a nearer face of the same direction hides go to
    charts of their own, so two surfaces never share texels where a chart would fold
    over itself (a torso behind an arm, both facing +Z).
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    n_faces = len(faces)
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    facing = normals @ AXES[:, 2].T  # (F, 6): cosine to each direction
    label = np.argmax(facing, axis=1)
    pairs = face_pairs(vertices, faces)
    adjacency = sparse.coo_matrix(
        (np.ones(2 * len(pairs)), (pairs.ravel(), pairs[:, ::-1].ravel())),
        shape=(n_faces, n_faces),
    ).tocsr()
    allowed = facing >= MIN_FACING
    for _ in range(SMOOTHING_ROUNDS):  # majority of the neighbours, own vote breaking ties
        onehot = np.eye(6)[label]
        votes = adjacency @ onehot + 1.5 * onehot + 0.25 * facing
        label = np.argmax(np.where(allowed, votes, -np.inf), axis=1)
    hidden = np.zeros(n_faces, bool)
    for k in range(6):
        sel = np.flatnonzero(label == k)
        if len(sel):
            hidden[sel] = self_hidden(vertices, faces[sel], AXES[k])
    key = label * 2 + hidden
    same = pairs[key[pairs[:, 0]] == key[pairs[:, 1]]]
    graph = sparse.coo_matrix(
        (np.ones(len(same)), (same[:, 0], same[:, 1])), shape=(n_faces, n_faces)
    )
    _, chart = connected_components(graph, directed=False)
    uv = np.einsum("fcd,fkd->fck", tri, AXES[label][:, :2])  # (F, 3, 2): onto (right, up)
    return chart, uv


def face_pairs(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(P, 2) faces sharing an edge, vertices matched by position (seams split them)."""
    f = position_ids(vertices)[faces]
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(len(faces)), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    e, o = edges[order], owner[order]
    match = (e[1:] == e[:-1]).all(axis=1)
    return np.column_stack([o[:-1][match], o[1:][match]])


def self_hidden(vertices: np.ndarray, faces: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Which faces, seen along ``frame``'s third row, lie behind others of the set."""
    p = vertices @ frame.T  # (right, up, toward the viewer)
    tri = p[faces]
    centres = tri.mean(axis=1)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    facing = normals[:, 2] / np.maximum(np.linalg.norm(normals, axis=1), 1e-30)
    image, lo, pixel = depth_image(p[:, :2], -p[:, 2], faces, CHART_DEPTH_PX)
    return ~in_front(centres[:, :2], -centres[:, 2], facing, image, lo, pixel, 0.0)


def pack(
    chart: np.ndarray,
    uv: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    size: int,
    padding: int,
) -> UVAtlas:
    """xatlas packs the charts into a square of ``size`` texels, ``padding`` apart."""
    import xatlas

    n_charts = int(chart.max()) + 1
    # One packing vertex per (mesh vertex, chart): charts are split apart at their seams.
    key = faces.astype(np.int64) * n_charts + chart[:, None]
    keys, corner = np.unique(key.ravel(), return_inverse=True)
    vmap = keys // n_charts
    first = np.zeros(len(keys), np.int64)
    first[corner] = np.arange(len(corner))
    chart_uv = uv.reshape(-1, 2)[first]
    of_chart = keys % n_charts
    # xatlas finds charts by shared UV positions: set charts apart, on a grid, so none
    # touch by chance (and coordinates stay small enough for float32).
    lo = np.full((n_charts, 2), np.inf)
    np.minimum.at(lo, of_chart, chart_uv)
    chart_uv -= lo[of_chart]
    cell = 1.5 * float(chart_uv.max()) + 1e-3
    columns = int(np.ceil(np.sqrt(n_charts)))
    chart_uv += np.column_stack([of_chart % columns, of_chart // columns]) * cell
    pack_options = xatlas.PackOptions()
    pack_options.resolution = size
    # xatlas's atlas comes out ~1.3x the requested resolution and is then scaled down to
    # ``size``: ask for proportionally more room between charts.
    pack_options.padding = int(np.ceil(padding * 1.4))
    pack_options.bilinear = True
    atlas = xatlas.Atlas()
    atlas.add_uv_mesh(
        np.ascontiguousarray(chart_uv, np.float32),
        np.ascontiguousarray(corner.reshape(-1, 3), np.uint32),
    )
    atlas.generate(xatlas.ChartOptions(), pack_options)
    xref, out_faces, out_uv = atlas[0]
    # xatlas divides by its atlas's width and height; keep texels square in a square map.
    w, h = atlas.width, atlas.height
    out_uv = out_uv.astype(np.float64) * (np.array([w, h], float) / max(w, h))
    out_vmap, out_faces, out_uv = _collapse_unpacked(
        vmap[xref.astype(np.int64)],
        out_faces.astype(np.int64),
        out_uv,
        _uv_area(uv),
        chart,
        vertices,
    )
    return UVAtlas(
        vmap=out_vmap,
        faces=out_faces,
        uv=out_uv,
        charts=n_charts,
        utilisation=float(atlas.utilization) * w * h / max(w, h) ** 2,
    )


def _uv_area(corners: np.ndarray) -> np.ndarray:
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def _collapse_unpacked(
    vmap: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    area_before: np.ndarray,
    chart: np.ndarray,
    vertices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give faces xatlas skipped as too small a point of UV where their corner was packed.

    Packing moves, turns, scales and may mirror each chart as a whole, so all faces of a
    chart change UV area by one factor; a face that did not is one xatlas ignored (a
    sliver of nearly no area), and a vertex only such faces use was never placed. Those
    faces get corners of their own, all at the UV where the same mesh vertex was placed
    (in this chart or the next, else the nearest placed one): one colour, the right one,
    on a face no one can see.
    """
    from scipy import ndimage

    ratio = _uv_area(uv[faces]) / np.where(area_before > 0, area_before, np.nan)
    ratio = np.nan_to_num(ratio, nan=0.0)
    n_charts = int(chart.max()) + 1
    scale = np.asarray(ndimage.median(ratio, labels=chart, index=np.arange(n_charts)))
    good = np.abs(ratio / np.where(scale != 0, scale, np.inf)[chart] - 1.0) < 0.05
    if good.all() or not good.any():
        return vmap, faces, uv
    placed = np.unique(faces[good])
    placed_at = np.full(len(vertices), -1)
    placed_at[vmap[placed]] = placed
    bad = faces[~good]
    candidates = placed_at[vmap[bad]]  # (B, 3), -1 where that mesh vertex was not placed
    spot_vertex = candidates.max(axis=1)
    lost = spot_vertex < 0  # a clump of slivers: the nearest placed vertex in space
    if lost.any():
        from scipy.spatial import cKDTree

        centres = vertices[vmap[bad[lost]]].mean(axis=1)
        spot_vertex[lost] = placed[cKDTree(vertices[vmap[placed]]).query(centres)[1]]
    spot = uv[spot_vertex]
    first = len(uv)
    vmap = np.concatenate([vmap, vmap[bad].ravel()])
    uv = np.concatenate([uv, np.repeat(spot, 3, axis=0)])
    faces = faces.copy()
    faces[~good] = np.arange(first, first + 3 * len(bad)).reshape(-1, 3)
    used = np.unique(faces)  # drop the vertices no face uses any more
    remap = np.full(len(uv), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vmap[used], remap[faces], uv[used]


def uv_atlas(vertices: np.ndarray, faces: np.ndarray, *, size: int, padding: int) -> UVAtlas:
    """``box_charts`` packed by ``pack``."""
    chart, uv = box_charts(vertices, faces)
    return pack(chart, uv, vertices, faces, size=size, padding=padding)
