"""Meshes the tests build from primitives: one watertight shell each, in the glTF frame of
DESIGN.md (+Y up, front to +Z, centred at the origin, longest side 1)."""

from __future__ import annotations

import json
import struct

import numpy as np
import trimesh
from trimesh.creation import box, icosphere

from bench.figures import character as character
from bench.figures import normalised, union
from bench.figures import smooth_figure as smooth_figure


def table() -> trimesh.Trimesh:
    """A top on four legs, the legs inset from the corners."""
    top = box(extents=(1.2, 0.08, 0.7)).apply_translation((0, 0.72, 0))
    legs = [
        box(extents=(0.08, 0.7, 0.08)).apply_translation((x, 0.35, z))
        for x in (-0.5, 0.5)
        for z in (-0.27, 0.27)
    ]
    return union([top, *legs])


def blob(subdivisions: int = 4) -> trimesh.Trimesh:
    """A smooth, slightly uneven closed surface (about 20 * 4**subdivisions faces)."""
    mesh = icosphere(subdivisions=subdivisions)
    v = mesh.vertices
    mesh.vertices = v * (1 + 0.15 * np.sin(3 * v[:, [0]]) * np.cos(2 * v[:, [1]]))
    return normalised(mesh)


def surface_colour(points: np.ndarray) -> np.ndarray:
    """(N, 3) uint8: a smooth colour field over 3D space, to paint textures with and to
    check them against (the colour a textured surface should show at each point)."""
    p = np.asarray(points, dtype=float)
    rgb = 0.5 + 0.5 * np.stack(
        [np.sin(6.0 * p[:, 0] + 1.0), np.sin(5.0 * p[:, 1] + 2.0), np.sin(7.0 * p[:, 2])], axis=1
    )
    return np.round(255 * rgb).astype(np.uint8)


def textured(mesh: trimesh.Trimesh, size: int = 256) -> trimesh.Trimesh:
    """``mesh`` unwrapped by xatlas into a UV atlas (split at its seams) with a texture
    painted by ``surface_colour`` of the 3D point under each texel."""
    import xatlas
    from PIL import Image
    from scipy import ndimage

    vmap, faces, uv = xatlas.parametrize(mesh.vertices, mesh.faces)
    vertices = np.asarray(mesh.vertices)[vmap]
    # Rasterise each UV triangle: texel centres -> barycentric -> 3D point -> colour.
    image = np.zeros((size, size, 3), dtype=np.uint8)
    covered = np.zeros((size, size), dtype=bool)
    px = uv * size  # texel (col, row-from-bottom)
    for tri in faces:
        a, b, c = px[tri]
        lo = np.floor(np.minimum(np.minimum(a, b), c)).astype(int).clip(0, size - 1)
        hi = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int).clip(0, size - 1)
        cols, rows = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        q = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
        m = np.array([b - a, c - a]).T
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        w = np.linalg.solve(m, (q - a).T).T
        inside = (w >= -1e-3).all(axis=1) & (w.sum(axis=1) <= 1 + 1e-3)
        if not inside.any():
            continue
        w, q = w[inside], q[inside].astype(int)
        pts = vertices[tri[0]] + w[:, :1] * (vertices[tri[1]] - vertices[tri[0]])
        pts = pts + w[:, 1:] * (vertices[tri[2]] - vertices[tri[0]])
        r, col = size - 1 - q[:, 1], q[:, 0]
        image[r, col] = surface_colour(pts)
        covered[r, col] = True
    # Bleed the charts outward so bilinear lookups at their edges see no black.
    _, (nr, nc) = ndimage.distance_transform_edt(~covered, return_indices=True)
    image = image[nr, nc]
    visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(image))
    return trimesh.Trimesh(vertices, faces, visual=visual, process=False)


def textured_quad(size: int = 16) -> trimesh.Trimesh:
    """Two triangles with UVs and a ``size`` square picture (a red-green ramp) on them."""
    from PIL import Image

    ramp = np.zeros((size, size, 3), dtype=np.uint8)
    ramp[..., 0] = np.linspace(0, 255, size)[None, :]
    ramp[..., 1] = np.linspace(0, 255, size)[:, None]
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(ramp))
    vertices = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]])
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], visual=visual, process=False)


def glb_parts(glb: bytes) -> tuple[dict, bytes]:
    """A GLB's JSON and BIN chunk (as trimesh writes it: JSON first, then BIN)."""
    json_length = struct.unpack("<I", glb[12:16])[0]
    doc = json.loads(glb[20 : 20 + json_length])
    bin_length = struct.unpack("<I", glb[20 + json_length : 24 + json_length])[0]
    return doc, glb[28 + json_length : 28 + json_length + bin_length]


def glb_of(doc: dict, *chunks: tuple[bytes, bytes]) -> bytes:
    """A GLB of ``doc`` and the chunks after it, given as (type, data): (b"BIN\\0", ...)."""
    body = b""
    for kind, data in [(b"JSON", json.dumps(doc).encode()), *chunks]:
        data += (b" " if kind == b"JSON" else b"\0") * (-len(data) % 4)
        body += struct.pack("<I", len(data)) + kind + data
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def glb_with_texture(picture: bytes) -> bytes:
    """The textured quad's GLB with its embedded picture's bytes replaced by ``picture``:
    the new bytes go at the end of the BIN chunk and the image's bufferView points there."""
    doc, binary = glb_parts(bytes(textured_quad().export(file_type="glb")))
    binary += b"\0" * (-len(binary) % 4)
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    view.update(byteOffset=len(binary), byteLength=len(picture))
    binary += picture
    doc["buffers"][0]["byteLength"] = len(binary)
    return glb_of(doc, (b"BIN\0", binary))


def gltf_with_texture_uri(uri: str) -> dict[str, bytes]:
    """The textured quad as a .gltf and its buffer file, its image at ``uri`` (a file
    beside it or a data: URI) instead of in the buffer."""
    doc, binary = glb_parts(bytes(textured_quad().export(file_type="glb")))
    doc["images"][0] = {"uri": uri}
    doc["buffers"][0]["uri"] = "quad.bin"
    return {"quad.gltf": json.dumps(doc).encode(), "quad.bin": binary}
