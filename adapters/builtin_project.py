"""builtin-project: texture a mesh on the CPU by projecting its picture onto it.

The picture is the mesh seen from +Z (DESIGN.md: picture x to +X, picture up to +Y), so
every surface point has a place in it: its (x, y), with the mesh's front-view bounding
box laid over the subject's bounding box in the picture. The pipeline, each step a
function over numpy arrays (I/O stays in the adapter):

1. ``uv_atlas``: charts, then xatlas packs them into one square texture. Each face
   goes to the axis direction it faces most (smoothed over its neighbours), a chart is a
   connected run of one direction laid out by projecting along it: no triangle flips,
   the front charts are the picture's own pixel grid, and it costs linear time. Faces
   hidden behind others of their own direction start charts of their own, so no chart
   folds over itself. (xatlas's own charting is slow on the dense, smooth meshes that
   marching cubes makes: neighbours within 0.8 degrees count as coplanar, so a whole
   dome becomes one "planar" region past any area cap, fails to flatten and is cut up
   piece by piece: 30-60 s at 100k faces, where this takes under a second.)
2. ``texel_samples``: the triangles rasterised in UV space, each covered texel with its
   face and barycentric weights, plus a gutter of ``padding`` texels around every chart,
   each taking the nearest chart texel's face: bilinear filtering and mipmaps then read
   the chart's own colours across its edge, never the empty atlas.
3. ``picture_points``: where a 3D point lands in the picture: the mesh's front-view box
   fitted inside the subject's box (builtin-inflate's ``foreground_mask``, so a mesh it
   inflated lines up with the picture the way it was built), aspect kept.
4. ``seen``: depth maps from the front and from the back (a z-buffer of the mesh); a
   sample facing +Z that nothing hides from the front is seen in the picture; one facing
   -Z that nothing hides from the back is seen in the picture's mirror through depth,
   which has the same (x, y) lookup, so front and back meet without a seam at the sides.
5. ``project``: seen samples take the picture's colour; hidden ones (behind an arm, in a
   fold) the colour of the nearest seen sample in 3D; the rest of the atlas the mean.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.base import Adapter, Artifact, InputError, Item, Result
from adapters.builtin_inflate import foreground_mask, vertex_colours
from runner.preview import barycentric, face_image
from storage.pictures import decode_rgba

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
DEPTH_PX = 512  # depth maps of the front and back views
FACING = 0.05  # |n_z| below which a face counts as seen edge-on from both sides
DEPTH_SLACK = 0.01  # share of the mesh's size a surface may sit behind the depth map
MAX_SLOPE = 10.0  # depth change per pixel allowed for a surface seen nearly edge-on
EDGE_BLUR_PX = 3.0  # picture pixels along an occluding edge that blend both sides
MAX_NEAREST_SOURCES = 200_000  # seen samples the hidden ones pick their colour from
MIN_EXTENT = 1e-6


class ProjectParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texture_size: int = Field(
        1024, ge=256, le=4096, description="width and height of the texture, in texels"
    )
    padding: int = Field(
        4, ge=1, le=16, description="texels of colour bled beyond each chart's edge"
    )


@dataclass
class UVAtlas:
    vmap: np.ndarray  # (M,) the input vertex under each atlas vertex (seams split them)
    faces: np.ndarray  # (F, 3) into the atlas vertices, in the input's face order
    uv: np.ndarray  # (M, 2) in [0, 1], v up (trimesh's convention)
    charts: int
    utilisation: float


@dataclass
class TexelSamples:
    rows: np.ndarray  # (S,) texel row (0 at the top of the image, i.e. v = 1)
    cols: np.ndarray  # (S,)
    faces: np.ndarray  # (S,) atlas face under (or, in the gutter, nearest to) the texel
    bary: np.ndarray  # (S, 3) weights in that face, summing to 1
    covered: np.ndarray  # (S,) bool: a triangle covers the texel centre (not gutter)


# ---------------------------------------------------------------------------- atlas


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
    _, weld = np.unique(vertices, axis=0, return_inverse=True)
    f = weld.reshape(-1)[faces]
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
    return ~_in_front(centres[:, :2], -centres[:, 2], facing, image, lo, pixel, 0.0)


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


# ---------------------------------------------------------------------------- texels


def texel_xy(uv: np.ndarray, size: int) -> np.ndarray:
    """UV (v up) to texel-image coordinates (x right, y down; texel centres at k + 0.5)."""
    return np.column_stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size])


def texel_samples(uv: np.ndarray, faces: np.ndarray, size: int, padding: int) -> TexelSamples:
    """Every texel a chart covers, and the gutter within ``padding`` texels of one."""
    from scipy import ndimage

    xy = texel_xy(uv, size)
    owner = face_image(xy, np.zeros(len(xy)), faces, size, size)
    # A chart too small to cover any texel centre (a clump of slivers) still gets the
    # texel under each face's centre, so it has a colour and a gutter like any other.
    centre = np.clip(xy[faces].mean(axis=1).astype(np.int64), 0, size - 1)
    bare = np.flatnonzero(owner[centre[:, 1], centre[:, 0]] < 0)
    owner[centre[bare, 1], centre[bare, 0]] = bare
    covered = owner >= 0
    # Chessboard distance: a square gutter, and several times faster than the exact EDT.
    dist, (nr, nc) = ndimage.distance_transform_cdt(
        ~covered, metric="chessboard", return_indices=True
    )
    rows, cols = np.nonzero(dist <= padding)
    face = owner[nr[rows, cols], nc[rows, cols]]
    # Weights of gutter texels fall outside their face: clipped and renormalised, the
    # point lands on the face's edge near the texel, and takes that edge's colour.
    bary = barycentric(xy, faces, face, rows, cols)
    bary /= np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)
    return TexelSamples(rows, cols, face, bary, covered[rows, cols])


# ---------------------------------------------------------------------------- picture


def picture_points(
    points: np.ndarray, lo: np.ndarray, hi: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Picture coordinates (px right, py down, pixel k spanning [k, k + 1]) of 3D points.

    The mesh's front-view box [lo, hi] (x, y) is scaled to fit inside the subject's box
    and centred on it: for a mesh inflated from this picture the two boxes coincide.
    """
    r0, r1, c0, c1 = _subject_box(mask)
    scale = picture_scale(lo, hi, mask)
    mid = (lo + hi) / 2
    px = (c0 + c1) / 2 + (points[:, 0] - mid[0]) * scale
    py = (r0 + r1) / 2 - (points[:, 1] - mid[1]) * scale
    return px, py


def picture_scale(lo: np.ndarray, hi: np.ndarray, mask: np.ndarray) -> float:
    """Picture pixels per mesh unit: the front-view box fitted inside the subject's box."""
    r0, r1, c0, c1 = _subject_box(mask)
    return float(min((c1 - c0) / (hi[0] - lo[0]), (r1 - r0) / (hi[1] - lo[1])))


def _subject_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


# ---------------------------------------------------------------------------- visibility


def depth_image(
    xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, px: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """The nearest (smallest) depth per pixel, +inf where empty, over the box of ``xy``
    with ``px`` pixels along its longer side; its corner and pixel size."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pixel = max(float((hi - lo).max()), MIN_EXTENT) / px
    w, h = (int(np.ceil((hi[i] - lo[i]) / pixel)) + 1 for i in (0, 1))
    grid = (xy - lo) / pixel  # rows run up the image here; nobody looks at it
    img = face_image(grid, depth, faces, w, h)
    rows, cols = np.nonzero(img >= 0)
    fi = img[rows, cols]
    out = np.full((h, w), np.inf)
    out[rows, cols] = (depth[faces[fi]] * barycentric(grid, faces, fi, rows, cols)).sum(axis=1)
    return out, lo, pixel


def _in_front(
    xy: np.ndarray,
    depth: np.ndarray,
    facing: np.ndarray,
    image: np.ndarray,
    lo: np.ndarray,
    pixel: float,
    slack: float,
) -> np.ndarray:
    """Points no deeper than the depth image at their pixel, allowing for the slope of
    their own surface across a pixel (``facing``: the cosine of their normal to the view).

    The allowance follows the point's own slope, not the neighbourhood's: a point just
    behind the edge of an arm in front of it stays hidden, where taking the farthest
    depth around would let it through, with the arm's colour from the picture, and
    that colour would spread into everything hidden behind the arm.
    """
    row, col = _pixel_of(xy, lo, pixel, image.shape)
    return depth <= image[row, col] + slack + pixel * _slope(facing)


def _pixel_of(
    xy: np.ndarray, lo: np.ndarray, pixel: float, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    col = np.clip(((xy[:, 0] - lo[0]) / pixel).astype(np.int64), 0, shape[1] - 1)
    row = np.clip(((xy[:, 1] - lo[1]) / pixel).astype(np.int64), 0, shape[0] - 1)
    return row, col


def _slope(facing: np.ndarray) -> np.ndarray:
    """Depth change across one pixel of a surface at this cosine to the view, plus one."""
    cos = np.clip(np.abs(facing), 1.0 / np.sqrt(1.0 + MAX_SLOPE**2), 1.0)
    return 1.0 + np.sqrt(1.0 - cos * cos) / cos


def seen(
    points: np.ndarray,
    normal_z: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    picture_px: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which points the picture shows from the front, which its mirror from behind, and
    which of those are far enough from an occluding edge to lend their colour to hidden
    ones (``picture_px``: the picture's pixels across the mesh's longest side).

    Along the outline of an arm in front of the torso the picture blends the two, so the
    torso just behind the outline has the arm's colour there; handed on to the hidden
    torso, it would paint a shadow of the arm onto it.
    """
    from scipy import ndimage

    slack = DEPTH_SLACK * float(np.ptp(vertices, axis=0).max())
    xy, z, pz = vertices[:, :2], vertices[:, 2], points[:, 2]
    shown, clear = [], []
    for sign in (1.0, -1.0):  # the front, then the back
        image, lo, pixel = depth_image(xy, -sign * z, faces, DEPTH_PX)
        row, col = _pixel_of(points[:, :2], lo, pixel, image.shape)
        depth, allowance = -sign * pz, pixel * _slope(normal_z)
        # Occluding edges: neighbouring pixels further apart in depth than any surface's
        # own slope makes them, widened by the picture's blur.
        step = slack + pixel * MAX_SLOPE
        finite = np.where(np.isfinite(image), image, np.nan)  # NaN: compares False
        down = np.abs(np.diff(finite, axis=0)) > step
        across = np.abs(np.diff(finite, axis=1)) > step
        jump = np.zeros(image.shape, bool)
        jump[1:] |= down
        jump[:-1] |= down
        jump[:, 1:] |= across
        jump[:, :-1] |= across
        band = int(np.ceil(EDGE_BLUR_PX * DEPTH_PX / max(picture_px, 1.0)))
        near_edge = ndimage.binary_dilation(jump, iterations=band)[row, col]
        # On the far side of such an edge, the few pixels the picture does show of a
        # surface are blended with the occluder: count them hidden too.
        nearest = ndimage.minimum_filter(image, size=2 * band + 1)[row, col]
        behind = near_edge & (depth > nearest + slack + band * allowance)
        shown.append((depth <= image[row, col] + slack + allowance) & ~behind)
        clear.append(~near_edge)
    from_front = (normal_z >= -FACING) & shown[0]
    from_back = (normal_z <= FACING) & shown[1] & ~from_front
    trusted = (from_front & clear[0]) | (from_back & clear[1])
    return from_front, from_back, trusted


# ---------------------------------------------------------------------------- project


def project(
    mesh: Any, rgba: np.ndarray, params: ProjectParams
) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """The whole backend: (textured trimesh, (size, size, 3) uint8 texture, info)."""
    import trimesh
    from PIL import Image
    from scipy.spatial import cKDTree

    size, padding = params.texture_size, params.padding
    clock = [time.perf_counter()]
    vertices = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    check_mesh(vertices, faces)
    mask = foreground_mask(rgba)
    clock.append(time.perf_counter())

    atlas = uv_atlas(vertices, faces, size=size, padding=padding)
    clock.append(time.perf_counter())

    samples = texel_samples(atlas.uv, atlas.faces, size, padding)
    av = vertices[atlas.vmap]
    corners = atlas.faces[samples.faces]  # (S, 3); float32 from here: millions of texels
    points = sum(
        av[corners[:, k]].astype(np.float32) * samples.bary[:, k : k + 1] for k in range(3)
    )
    clock.append(time.perf_counter())

    tri = av[atlas.faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face_z = face_n[:, 2] / np.maximum(np.linalg.norm(face_n, axis=1), 1e-30)
    normal_z = face_z.astype(np.float32)[samples.faces]
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    px_per_unit = picture_scale(lo, hi, mask)
    picture_px = px_per_unit * float((hi - lo).max())
    from_front, from_back, trusted = seen(points, normal_z, vertices, faces, picture_px)
    clock.append(time.perf_counter())

    shown = from_front | from_back
    px, py = picture_points(points[shown], lo, hi, mask)
    # The picture's pixels per texel: detail finer than a texel is averaged, not aliased.
    px_per_texel = px_per_unit * _texel_length(atlas, av, size)
    colours = np.empty((len(points), 3), np.uint8)
    colours[shown] = vertex_colours(rgba, mask, px, py, blur_px=0.5 * px_per_texel)[:, :3]
    hidden = ~shown
    if hidden.any():
        source = np.flatnonzero(trusted if trusted.any() else shown)
        source = source[:: max(1, len(source) // MAX_NEAREST_SOURCES)]
        _, nearest = cKDTree(points[source]).query(points[hidden])
        colours[hidden] = colours[source[nearest]]
    texture = np.empty((size, size, 3), np.uint8)
    texture[...] = np.round(colours[samples.covered].mean(axis=0)).astype(np.uint8)
    texture[samples.rows, samples.cols] = colours
    clock.append(time.perf_counter())

    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(texture), metallicFactor=0.0, roughnessFactor=1.0
    )
    out = trimesh.Trimesh(
        av,
        atlas.faces,
        vertex_normals=np.asarray(mesh.vertex_normals)[atlas.vmap],
        visual=trimesh.visual.TextureVisuals(uv=atlas.uv, material=material),
        process=False,
    )
    clock.append(time.perf_counter())
    covered = samples.covered
    n_cov = max(int(covered.sum()), 1)
    info = {
        "texture_size": size,
        "charts": atlas.charts,
        "atlas_utilisation": round(atlas.utilisation, 4),
        "texels_covered": int(covered.sum()),
        "texels_gutter": int((~covered).sum()),
        "share_front": round(float((from_front & covered).sum()) / n_cov, 4),
        "share_back": round(float((from_back & covered).sum()) / n_cov, 4),
        "share_fill": round(float((hidden & covered).sum()) / n_cov, 4),
        "seconds": {
            stage: round(float(dt), 4)
            for stage, dt in zip(
                ("check", "atlas", "texels", "visibility", "colour", "mesh"),
                np.diff(clock),
                strict=True,
            )
        },
    }
    return out, texture, info


def check_mesh(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Refuse what cannot carry a projected texture: no area, or edge-on to the picture."""
    if len(faces) == 0:
        raise InputError("mesh has no faces to texture")
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    extent = vertices.max(axis=0) - vertices.min(axis=0)
    if not area.sum() > MIN_EXTENT**2 * len(faces):
        raise InputError("mesh is degenerate: its faces have no area to lay a texture on")
    if extent[0] <= MIN_EXTENT * extent.max() or extent[1] <= MIN_EXTENT * extent.max():
        raise InputError(
            "mesh has no width or no height seen from the front (+Z); the picture cannot be"
            " projected onto it"
        )


def _texel_length(atlas: UVAtlas, av: np.ndarray, size: int) -> float:
    """Mesh units per texel (the square root of 3D area over UV area, in texels)."""
    tri = av[atlas.faces]
    a3 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    uv = atlas.uv[atlas.faces] * size
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    a2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    return float(np.sqrt(a3 / max(a2, 1e-20)))


def png_bytes(texture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(texture).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


# ---------------------------------------------------------------------------- adapter


class ProjectAdapter(Adapter):
    """Nothing to load and no device to hold: it runs anywhere."""

    tasks = ("texture",)
    accepts = ("mesh", "image")
    images_used = 1  # the first picture
    requires = ("mesh", "image")
    Params = ProjectParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        params = ProjectParams.model_validate(item.params)
        name = item.image_names[0] if item.image_names else "image"
        t0 = time.perf_counter()
        rgba = decode_rgba(item.images[0], name=name)
        mesh, texture, info = project(item.mesh, rgba, params)
        t1 = time.perf_counter()
        png = png_bytes(texture)
        info["seconds"]["png"] = round(time.perf_counter() - t1, 4)
        info["seconds"]["total"] = round(time.perf_counter() - t0, 4)
        return Result(mesh=mesh, artifacts=[Artifact("texture.png", png)], info=info)
