"""Headless previews: a Trimesh or Scene drawn by the numpy rasteriser (``raster``).

Shading is Lambert with an ambient and a fill term on interpolated normals; colour comes
from a texture (per-pixel UV), vertex colours, face colours, a material's base colour,
or one colour per geometry for a scene of parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geometry.barycentric import pixel_barycentric
from geometry.camera import camera, framing, to_screen
from geometry.measures import hides_back_faces
from geometry.palette import PALETTE
from geometry.raster import face_image

BACKGROUND_TOP = np.array([238, 240, 244], dtype=np.float32)
BACKGROUND_BOTTOM = np.array([206, 210, 218], dtype=np.float32)
NEUTRAL = np.array([180, 180, 185], dtype=np.float32)
PART_COLOURS = PALETTE.astype(np.float32)
KEY_LIGHT = np.array([-0.45, 0.65, 0.62]) / np.linalg.norm([-0.45, 0.65, 0.62])
FILL_LIGHT = np.array([0.6, -0.1, 0.8]) / np.linalg.norm([0.6, -0.1, 0.8])


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
            closed=hides_back_faces(tm),
        )
        visual = tm.visual
        if visual.kind == "texture":
            material = getattr(visual, "material", None)
            image = base_colour_image(material)
            factor = getattr(material, "baseColorFactor", None)
            if image is not None and getattr(visual, "uv", None) is not None:
                g.uv = np.asarray(visual.uv, float)
                g.texture = np.asarray(image.convert("RGB"), np.float32)
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


def base_colour_image(material: Any) -> Any:
    """The colour picture (PIL) of a PBR or simple material, None when it has none."""
    image = getattr(material, "baseColorTexture", None)
    if image is None:
        image = getattr(material, "image", None)
    return image


def _merged(geoms: list[Geometry], rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pieces' vertices in the camera's frame, and their faces indexing them."""
    v = np.concatenate([g.vertices for g in geoms]) @ rot.T
    vstart = np.cumsum([0] + [len(g.vertices) for g in geoms])
    faces = np.concatenate([g.faces + vstart[i] for i, g in enumerate(geoms)])
    return v, faces


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
    """An (size, size, 3) uint8 picture of a Trimesh or Scene, fitted with a margin
    (``camera.framing``).

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
    v, faces = _merged(geoms, rot)
    centre, scale = framing(v[:, :2], full)
    xy = to_screen(v, centre, scale, (full / 2, full / 2))
    fstart = np.cumsum([0] + [len(g.faces) for g in geoms])
    closed = all(g.closed for g in geoms)
    img = face_image(xy, -v[:, 2], faces, full, full, cull_back=closed)
    rows, cols = np.nonzero(img >= 0)
    fi = img[rows, cols]
    w = pixel_barycentric(xy, faces, fi, rows, cols)
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
    v, faces = _merged(geometries(mesh), camera(view))
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    scale = np.array([width, height]) / (hi - lo)
    xy = to_screen(v, (lo + hi) / 2, scale, (width / 2, height / 2))
    return face_image(xy, -v[:, 2], faces, width, height) >= 0
