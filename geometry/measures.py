"""What a mesh measures: face areas, whether it is closed, the manifest's statistics.

"Closed" means three things to three readers, each kept under its own name:
``is_watertight`` (the manifest: closed as a surface, vertices split at UV seams or for
normals joined by position first), ``is_closed`` (decimation: closed by vertex index
and not folded flat onto itself) and ``hides_back_faces`` (the rasteriser: closed and
wound outward, so a face turned away is never seen).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geometry.edges import edge_uses
from geometry.weld import position_ids


def face_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(F,) area of each triangle."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def is_closed(faces: np.ndarray) -> bool:
    """Whether every edge joins exactly two faces and no two faces are the same triangle
    (a closed surface, not one folded flat onto itself)."""
    f = np.sort(np.asarray(faces, dtype=np.int64), axis=1)
    if len(f) == 0:
        return False
    rows = f[np.lexsort((f[:, 2], f[:, 1], f[:, 0]))]
    if (rows[1:] == rows[:-1]).all(axis=1).any():
        return False
    return bool((edge_uses(f, int(f.max()) + 1) == 2).all())


def is_watertight(geom: Any) -> bool:
    """Closed as a surface: vertices split only to carry UV seams or normals are joined
    by position first (trimesh counts edges by vertex index)."""
    import trimesh

    if not isinstance(geom, trimesh.Trimesh) or not len(geom.faces):
        return False
    if geom.is_watertight:
        return True
    # Edges by exact position (no snapping): closed when each is shared by an even number
    # of faces (two, or four where a boolean union left two sheets touching along it).
    ids = position_ids(geom.vertices)
    counts = edge_uses(ids[geom.faces], int(ids.max()) + 1)
    return bool((counts % 2 == 0).all())


def hides_back_faces(tm: Any) -> bool:
    """Whether a Trimesh is watertight and consistently wound outward: then every face
    turned away from a viewer is behind another, and a rasteriser may skip them."""
    return bool(tm.is_watertight and tm.is_winding_consistent and tm.volume > 0)


def mesh_stats(mesh: Any) -> dict[str, Any]:
    """A Trimesh's or Scene's counts, closedness and bounding box, as the manifest
    records them (DESIGN.md: Outputs)."""
    import trimesh

    geoms = list(mesh.geometry.values()) if isinstance(mesh, trimesh.Scene) else [mesh]
    bounds = np.asarray(mesh.bounds, dtype=float)
    return {
        "vertices": int(sum(len(g.vertices) for g in geoms)),
        "faces": int(sum(len(getattr(g, "faces", ())) for g in geoms)),
        "watertight": bool(all(is_watertight(g) for g in geoms)),
        "bbox": {"min": bounds[0].round(6).tolist(), "max": bounds[1].round(6).tolist()},
    }
