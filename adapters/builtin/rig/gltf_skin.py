"""A GLB writer for one skinned mesh: trimesh exports no skins, so this writes them itself.

The file holds one JSON chunk and one binary buffer. Joints are nodes whose translation
is relative to their parent (the bind pose has no rotation), so a joint's global bind
transform is a translation to its position and its inverse bind matrix the opposite
translation. The skinned mesh node sits at the scene root next to the root joint, as
the glTF spec asks (a skinned mesh's own transform is ignored by viewers).

Carried over from the input: normals, vertex colours (COLOR_0), and UVs with a base
colour texture (TEXCOORD_0, the picture stored as PNG in the buffer); other material
channels are not.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
FLOAT, UNSIGNED_BYTE, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5121, 5123, 5125
COMPONENT = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.uint8): UNSIGNED_BYTE,
    np.dtype(np.uint16): UNSIGNED_SHORT,
    np.dtype(np.uint32): UNSIGNED_INT,
}
TYPE = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}


class _Builder:
    """Appends arrays to one binary buffer, one bufferView and accessor each."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))  # every view starts 4-byte aligned
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.blob.extend(data)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(
        self,
        array: np.ndarray,
        *,
        target: int | None = ARRAY_BUFFER,
        normalized: bool = False,
        bounds: bool = False,
    ) -> int:
        array = np.ascontiguousarray(array)
        width = 1 if array.ndim == 1 else int(np.prod(array.shape[1:]))
        acc: dict[str, Any] = {
            "bufferView": self.view(array.tobytes(), target),
            "componentType": COMPONENT[array.dtype],
            "count": int(len(array)),
            "type": TYPE[width],
        }
        if normalized:
            acc["normalized"] = True
        if bounds:  # required for POSITION; the float32 values themselves, not float64 ones
            flat = array.reshape(len(array), width)
            acc["min"] = [float(x) for x in flat.min(axis=0)]
            acc["max"] = [float(x) for x in flat.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def skinned_glb(
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    joint_positions: np.ndarray,
    parents: np.ndarray,
    joint_names: list[str],
    joint_index: np.ndarray,
    weights: np.ndarray,
    *,
    uv: np.ndarray | None = None,
    texture_png: bytes | None = None,
    colours: np.ndarray | None = None,
    base_colour: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0),
) -> bytes:
    """The GLB bytes of a mesh bound to a joint tree.

    ``parents[j]`` is the parent joint of ``j`` (-1 for the root, which must be joint 0,
    and parents come before their children). ``joint_index``/``weights`` are (N, 4): the
    influences per vertex, weights already normalised in float32. ``uv`` is in trimesh's
    convention (v up); it is flipped to glTF's (v down) here.
    """
    joint_positions = np.asarray(joint_positions, np.float64)
    parents = np.asarray(parents)
    count = len(joint_positions)
    if parents[0] != -1 or (parents[1:] < 0).any() or (parents[1:] >= np.arange(1, count)).any():
        raise ValueError("joint 0 must be the root and every parent must precede its child")
    b = _Builder()
    attributes = {
        "POSITION": b.accessor(np.asarray(vertices, np.float32), bounds=True),
        "NORMAL": b.accessor(_unit(normals)),
    }
    if uv is not None:
        tex = np.column_stack([uv[:, 0], 1.0 - uv[:, 1]]).astype(np.float32)
        attributes["TEXCOORD_0"] = b.accessor(tex)
    if colours is not None:
        attributes["COLOR_0"] = b.accessor(np.asarray(colours, np.uint8), normalized=True)
    index_type = np.uint8 if count <= 256 else np.uint16
    attributes["JOINTS_0"] = b.accessor(np.asarray(joint_index, index_type))
    attributes["WEIGHTS_0"] = b.accessor(np.asarray(weights, np.float32))
    indices = b.accessor(
        np.asarray(faces, np.uint32).reshape(-1), target=ELEMENT_ARRAY_BUFFER, bounds=False
    )
    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (count, 1, 1))
    inverse_bind[:, :3, 3] = -joint_positions
    # glTF matrices are column-major: each joint's matrix is written transposed.
    ibm = b.accessor(inverse_bind.transpose(0, 2, 1).reshape(count, 16), target=None)

    material: dict[str, Any] = {
        "name": "skin",
        "pbrMetallicRoughness": {
            "baseColorFactor": [float(c) for c in base_colour],
            "metallicFactor": 0.0,
            "roughnessFactor": 0.9,
        },
    }
    doc: dict[str, Any] = {"asset": {"version": "2.0", "generator": "gen3d-batch builtin-rig"}}
    if uv is not None and texture_png is not None:
        image_view = b.view(texture_png)
        doc["images"] = [{"bufferView": image_view, "mimeType": "image/png"}]
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987}]
        doc["textures"] = [{"source": 0, "sampler": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}

    children: list[list[int]] = [[] for _ in range(count)]
    for j in range(1, count):
        children[int(parents[j])].append(j)
    nodes: list[dict[str, Any]] = []
    for j in range(count):
        origin = joint_positions[parents[j]] if j else np.zeros(3)
        node: dict[str, Any] = {
            "name": joint_names[j],
            "translation": [float(x) for x in joint_positions[j] - origin],
        }
        if children[j]:
            node["children"] = children[j]
        nodes.append(node)
    nodes.append({"name": "mesh", "mesh": 0, "skin": 0})
    doc.update(
        {
            "scene": 0,
            "scenes": [{"nodes": [count, 0]}],
            "nodes": nodes,
            "meshes": [
                {
                    "name": "mesh",
                    "primitives": [
                        {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}
                    ],
                }
            ],
            "materials": [material],
            "skins": [
                {
                    "name": "skeleton",
                    "inverseBindMatrices": ibm,
                    "joints": list(range(count)),
                    "skeleton": 0,
                }
            ],
            "accessors": b.accessors,
            "bufferViews": b.views,
            "buffers": [{"byteLength": len(b.blob)}],
        }
    )
    return _pack(doc, bytes(b.blob))


def _unit(normals: np.ndarray) -> np.ndarray:
    """float32 unit normals; zero or broken ones (degenerate faces) become +Y."""
    n = np.asarray(normals, np.float64)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    good = np.isfinite(length) & (length > 1e-12)
    n = np.where(good, n / np.where(good, length, 1.0), [0.0, 1.0, 0.0])
    return n.astype(np.float32)


def _pack(doc: dict[str, Any], blob: bytes) -> bytes:
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)  # the JSON chunk is padded with spaces
    blob += b"\0" * (-len(blob) % 4)  # the binary chunk with zeros
    out = io.BytesIO()
    total = 12 + 8 + len(text) + 8 + len(blob)
    out.write(struct.pack("<III", GLB_MAGIC, 2, total))
    out.write(struct.pack("<II", len(text), CHUNK_JSON))
    out.write(text)
    out.write(struct.pack("<II", len(blob), CHUNK_BIN))
    out.write(blob)
    return out.getvalue()
