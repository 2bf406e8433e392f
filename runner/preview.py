"""Headless previews: a small vectorised z-buffer rasteriser in numpy.

No display, no GPU, no OpenGL: previews must render on any runner, including the CI
machine. Triangles are grouped by the size of their pixel box and tested against
candidate pixels in bulk; the nearest fragment per pixel wins through a scatter-min
z-buffer (no sort). Shading is Lambert with an ambient and a fill term on interpolated
normals; colour comes from a texture (per-pixel UV), vertex colours, face colours, a
material's base colour, or one colour per geometry for a scene of parts.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

BACKGROUND_TOP = np.array([238, 240, 244], dtype=np.float32)
BACKGROUND_BOTTOM = np.array([206, 210, 218], dtype=np.float32)
NEUTRAL = np.array([180, 180, 185], dtype=np.float32)
PART_COLOURS = np.array(
    [
        [230, 97, 75], [75, 150, 230], [105, 195, 95], [240, 190, 60], [170, 110, 210],
        [60, 200, 200], [240, 130, 180], [150, 150, 90], [95, 110, 130], [220, 160, 120],
    ],
    dtype=np.float32,
)  # fmt: skip
VIEWS = {"three_quarter": (35.0, 25.0), "front": (0.0, 0.0)}  # (yaw, pitch) in degrees
KEY_LIGHT = np.array([-0.45, 0.65, 0.62]) / np.linalg.norm([-0.45, 0.65, 0.62])
FILL_LIGHT = np.array([0.6, -0.1, 0.8]) / np.linalg.norm([0.6, -0.1, 0.8])
MAX_CANDIDATES = 4_000_000  # per chunk of triangles: bounds the rasteriser's memory
MARGIN = 0.86  # share of the frame the object's larger screen extent fills


@dataclass
class Geometry:
    """What the rasteriser needs: positions, triangles, per-vertex normals, a colour source."""

    vertices: np.ndarray  # (N, 3) float
    faces: np.ndarray  # (F, 3) int
    normals: np.ndarray  # (N, 3) float
    vertex_rgb: np.ndarray | None = None  # (N, 3) float 0-255
    face_rgb: np.ndarray | None = None  # (F, 3)
    uv: np.ndarray | None = None  # (N, 2)
    texture: np.ndarray | None = None  # (H, W, 3) float
    closed: bool = False  # watertight and consistently wound: back faces are never seen


def camera(view: str) -> np.ndarray:
    """Rows: right, up, toward-camera, for an orthographic camera looking at the origin.

    "three_quarter" sits above, in front and to the right (+X, +Y, +Z), so the front
    (+Z) and the right side both show and a mirrored mesh would look wrong.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {sorted(VIEWS)}")
    yaw, pitch = (np.radians(a) for a in VIEWS[view])
    back = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back])


def geometries(mesh: Any) -> list[Geometry]:
    """Flatten a Trimesh or a Scene (transforms applied) into renderable pieces."""
    import trimesh

    parts: list[Any] = list(mesh.dump()) if isinstance(mesh, trimesh.Scene) else [mesh]
    meshes: list[Any] = [m for m in parts if isinstance(m, trimesh.Trimesh) and len(m.faces)]
    out = []
    for n, tm in enumerate(meshes):
        g = Geometry(
            np.asarray(tm.vertices, float),
            np.asarray(tm.faces),
            np.asarray(tm.vertex_normals, float),
            closed=bool(tm.is_watertight and tm.is_winding_consistent and tm.volume > 0),
        )
        visual = tm.visual
        if visual.kind == "texture":
            material = getattr(visual, "material", None)
            image = _texture_image(material)
            factor = getattr(material, "baseColorFactor", None)
            if image is not None and getattr(visual, "uv", None) is not None:
                g.uv, g.texture = np.asarray(visual.uv, float), image
            elif factor is not None:  # an untextured PBR material: one flat colour
                base = np.asarray(factor)[:3]
                base = base * 255.0 if base.dtype.kind == "f" else base
                g.face_rgb = np.broadcast_to(base.astype(np.float32), (len(g.faces), 3))
        elif visual.kind == "vertex":
            g.vertex_rgb = np.asarray(visual.vertex_colors, np.float32)[:, :3]
        elif visual.kind == "face":
            g.face_rgb = np.asarray(visual.face_colors, np.float32)[:, :3]
        if g.texture is None and g.vertex_rgb is None and g.face_rgb is None and len(meshes) > 1:
            g.face_rgb = np.broadcast_to(PART_COLOURS[n % len(PART_COLOURS)], (len(g.faces), 3))
        out.append(g)
    return out


def _texture_image(material: Any) -> np.ndarray | None:
    image = getattr(material, "baseColorTexture", None)
    if image is None:
        image = getattr(material, "image", None)
    return None if image is None else np.asarray(image.convert("RGB"), np.float32)


def face_image(
    xy: np.ndarray,
    depth: np.ndarray,
    faces: np.ndarray,
    width: int,
    height: int,
    *,
    cull_back: bool = False,
) -> np.ndarray:
    """The nearest triangle per pixel, -1 where none: an (height, width) int64 array.

    ``xy`` are pixel coordinates (x right, y down; pixel (i, j) has its centre at
    (j + 0.5, i + 0.5)); smaller ``depth`` is nearer. ``cull_back`` skips triangles
    facing away, which a closed surface always hides: half the work.
    """
    tri = xy[faces].astype(np.float32)  # (F, 3, 2)
    tri_z = depth[faces].astype(np.float32)  # (F, 3)
    lo = np.maximum(np.floor(tri.min(axis=1) - 0.5).astype(np.int32), 0)
    hi = np.minimum(np.ceil(tri.max(axis=1) - 0.5).astype(np.int32), [width - 1, height - 1])
    ext = hi - lo + 1  # candidate pixels per axis
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    # y points down on screen, so a counter-clockwise (front-facing) triangle has det < 0.
    visible = (det < -1e-9) if cull_back else (np.abs(det) > 1e-9)
    visible &= (ext > 0).all(axis=1)
    inv = (1.0 / np.where(visible, det, 1.0)).astype(np.float32)
    dz1, dz2 = tri_z[:, 1] - tri_z[:, 0], tri_z[:, 2] - tri_z[:, 0]
    # centre of the first candidate pixel, relative to vertex 0
    start_x = lo[:, 0].astype(np.float32) + 0.5 - tri[:, 0, 0]
    start_y = lo[:, 1].astype(np.float32) + 0.5 - tri[:, 0, 1]
    # Group triangles by the exact size of their pixel box, so every candidate tested is
    # inside the box (power-of-two squares tested 3-4x more pixels on typical meshes).
    key = ext[:, 0].astype(np.int64) * 100_000 + ext[:, 1]
    idx = np.flatnonzero(visible)
    order = idx[np.argsort(key[idx], kind="stable")]
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    pix_l, dep_l, face_l = [], [], []
    for group in np.split(order, bounds) if len(order) else []:
        sx, sy = int(ext[group[0], 0]), int(ext[group[0], 1])
        oy, ox = np.divmod(np.arange(sx * sy, dtype=np.int32), sx)
        fx, fy = ox.astype(np.float32), oy.astype(np.float32)
        step = max(1, MAX_CANDIDATES // (sx * sy))
        for first in range(0, len(group), step):
            c = group[first : first + step, None]
            cx, cy = fx + start_x[c], fy + start_y[c]
            b1 = (cx * e2[c, 1] - cy * e2[c, 0]) * inv[c]
            b2 = (e1[c, 0] * cy - e1[c, 1] * cx) * inv[c]
            ti, ci = np.nonzero((b1 >= -1e-6) & (b2 >= -1e-6) & (b1 + b2 <= 1.0 + 1e-6))
            f = c[ti, 0]
            pix_l.append((lo[f, 1] + oy[ci]).astype(np.int64) * width + lo[f, 0] + ox[ci])
            dep_l.append(tri_z[f, 0] + b1[ti, ci] * dz1[f] + b2[ti, ci] * dz2[f])
            face_l.append(f)
    out = np.full(width * height, -1, dtype=np.int64)
    if pix_l:
        pix, face = np.concatenate(pix_l), np.concatenate(face_l)
        dep = np.concatenate(dep_l).astype(np.float32)  # rounded as the z-buffer rounds
        zbuf = np.full(width * height, np.inf, dtype=np.float32)
        np.minimum.at(zbuf, pix, dep)
        win = dep <= zbuf[pix]
        out[pix[win]] = face[win]
    return out.reshape(height, width)


def barycentric(
    xy: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """(P, 3) float32 weights of pixel centres (rows, cols) in their triangles.

    Each face's weights are an affine function of the pixel position; its six
    coefficients are gathered once per pixel instead of the triangle's corners.
    """
    t = xy.astype(np.float64)[faces]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    inv = 1.0 / np.where(np.abs(det) > 1e-12, det, 1e-12)
    x0, y0 = t[:, 0, 0], t[:, 0, 1]
    # b1 = ((x - x0) e2y - (y - y0) e2x) / det, b2 = ((y - y0) e1x - (x - x0) e1y) / det
    coef = np.column_stack(
        [
            e2[:, 1] * inv,
            -e2[:, 0] * inv,
            (y0 * e2[:, 0] - x0 * e2[:, 1]) * inv,
            -e1[:, 1] * inv,
            e1[:, 0] * inv,
            (x0 * e1[:, 1] - y0 * e1[:, 0]) * inv,
        ]
    ).astype(np.float32)[face_ids]
    x = cols.astype(np.float32) + 0.5
    y = rows.astype(np.float32) + 0.5
    b1 = coef[:, 0] * x + coef[:, 1] * y + coef[:, 2]
    b2 = coef[:, 3] * x + coef[:, 4] * y + coef[:, 5]
    return np.clip(np.column_stack([1.0 - b1 - b2, b1, b2]), 0.0, 1.0)


def rasterize(
    xy: np.ndarray,
    depth: np.ndarray,
    faces: np.ndarray,
    width: int,
    height: int,
    *,
    cull_back: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``face_image`` plus an (height, width, 3) image of barycentric weights."""
    img = face_image(xy, depth, faces, width, height, cull_back=cull_back)
    rows, cols = np.nonzero(img >= 0)
    bary = np.zeros((height, width, 3), np.float32)
    bary[rows, cols] = barycentric(xy, faces, img[rows, cols], rows, cols)
    return img, bary


def _interpolate(attr: np.ndarray, tri: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-pixel blend of per-vertex values; three gathers beat one (P, 3, k) reduce."""
    a = np.asarray(attr, np.float32)
    return a[tri[:, 0]] * w[:, :1] + a[tri[:, 1]] * w[:, 1:2] + a[tri[:, 2]] * w[:, 2:]


def render(
    mesh: Any,
    *,
    size: int = 512,
    view: str = "three_quarter",
    background: tuple[int, int, int] | None = None,
    supersample: int = 2,
) -> np.ndarray:
    """An (size, size, 3) uint8 picture of a Trimesh or Scene, fitted with a margin.

    ``background`` None is a soft grey gradient, so white and black objects both show.
    ``supersample`` renders k times larger and averages: smooth outlines for a few
    hundred milliseconds more.
    """
    geoms = geometries(mesh)
    full = size * supersample
    rgb = _background(full, background)
    if not geoms:
        return _downsample(rgb, supersample)
    rot = camera(view)
    v = np.concatenate([g.vertices for g in geoms]) @ rot.T
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    scale = MARGIN * full / max(float((hi - lo).max()), 1e-9)
    centre = (lo + hi) / 2
    xy = np.column_stack(
        [(v[:, 0] - centre[0]) * scale + full / 2, full / 2 - (v[:, 1] - centre[1]) * scale]
    )
    vstart = np.cumsum([0] + [len(g.vertices) for g in geoms])
    fstart = np.cumsum([0] + [len(g.faces) for g in geoms])
    faces = np.concatenate([g.faces + vstart[i] for i, g in enumerate(geoms)])
    closed = all(g.closed for g in geoms)
    img = face_image(xy, -v[:, 2], faces, full, full, cull_back=closed)
    rows, cols = np.nonzero(img >= 0)
    fi = img[rows, cols]
    w = barycentric(xy, faces, fi, rows, cols)
    tri = faces[fi]
    normals = np.concatenate([g.normals for g in geoms]) @ rot.T
    n = _interpolate(normals, tri, w)
    n *= np.sign(n[:, 2:] + 1e-12) / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    albedo = np.empty((len(fi), 3), np.float32)
    for gi, g in enumerate(geoms):  # a handful of parts at most: not a per-triangle loop
        sel = (fi >= fstart[gi]) & (fi < fstart[gi + 1])
        albedo[sel] = _albedo(g, fi[sel] - fstart[gi], w[sel])
    lambert = np.clip(n @ KEY_LIGHT.astype(np.float32), 0.0, 1.0)
    fill = np.clip(n @ FILL_LIGHT.astype(np.float32), 0.0, 1.0)
    shade = 0.32 + 0.58 * lambert + 0.15 * fill
    rgb[rows, cols] = np.clip(albedo * shade[:, None], 0, 255)
    return _downsample(rgb, supersample)


def _albedo(g: Geometry, faces: np.ndarray, w: np.ndarray) -> np.ndarray:
    tri = g.faces[faces]
    if g.texture is not None and g.uv is not None:
        uv = _interpolate(g.uv, tri, w) % 1.0
        th, tw, _ = g.texture.shape
        col = np.clip((uv[:, 0] * tw).astype(np.int64), 0, tw - 1)
        row = np.clip(((1.0 - uv[:, 1]) * th).astype(np.int64), 0, th - 1)  # trimesh: v up
        return g.texture[row, col]
    if g.vertex_rgb is not None:
        return _interpolate(g.vertex_rgb, tri, w)
    if g.face_rgb is not None:
        return np.asarray(g.face_rgb)[faces]
    return np.broadcast_to(NEUTRAL, (len(faces), 3))


def _background(size: int, colour: tuple[int, int, int] | None) -> np.ndarray:
    if colour is not None:
        return np.full((size, size, 3), colour, dtype=np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    return np.broadcast_to(BACKGROUND_TOP * (1 - t) + BACKGROUND_BOTTOM * t, (size, size, 3)).copy()


def _downsample(rgb: np.ndarray, k: int) -> np.ndarray:
    if k > 1:
        acc = np.zeros_like(rgb[::k, ::k])
        for i in range(k):
            for j in range(k):
                acc += rgb[i::k, j::k]
        rgb = acc / (k * k)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def silhouette(mesh: Any, width: int, height: int, *, view: str = "front") -> np.ndarray:
    """A boolean (height, width) mask of the mesh seen from ``view``, its bounding box
    fitted to the frame with no margin: a front view lines up with the picture's crop."""
    geoms = geometries(mesh)
    rot = camera(view)
    v = np.concatenate([g.vertices for g in geoms]) @ rot.T
    vstart = np.cumsum([0] + [len(g.vertices) for g in geoms])
    faces = np.concatenate([g.faces + vstart[i] for i, g in enumerate(geoms)])
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    xy = np.column_stack(
        [(v[:, 0] - lo[0]) / (hi[0] - lo[0]) * width, (hi[1] - v[:, 1]) / (hi[1] - lo[1]) * height]
    )
    return face_image(xy, -v[:, 2], faces, width, height) >= 0


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG of an (H, W, 3) uint8 array; zlib level 1: previews are written once, read rarely."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buf, format="PNG", optimize=False, compress_level=1
    )
    return buf.getvalue()
