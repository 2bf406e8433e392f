"""A mesh's statistics for its manifest (vertices, faces, closed surface, bounding box).

Kept apart from publishing so that it can move, whole, to the shared geometry package.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def mesh_stats(mesh: Any) -> dict[str, Any]:
    import trimesh

    geoms = list(mesh.geometry.values()) if isinstance(mesh, trimesh.Scene) else [mesh]
    bounds = np.asarray(mesh.bounds, dtype=float)
    return {
        "vertices": int(sum(len(g.vertices) for g in geoms)),
        "faces": int(sum(len(getattr(g, "faces", ())) for g in geoms)),
        "watertight": bool(all(_watertight(g) for g in geoms)),
        "bbox": {"min": bounds[0].round(6).tolist(), "max": bounds[1].round(6).tolist()},
    }


def _watertight(geom: Any) -> bool:
    """Closed as a surface: vertices split only to carry UV seams or normals are joined
    by position first (trimesh counts edges by vertex index)."""
    import trimesh

    if not isinstance(geom, trimesh.Trimesh) or not len(geom.faces):
        return False
    if geom.is_watertight:
        return True
    # Edges by exact position (no snapping): closed when each is shared by an even number
    # of faces (two, or four where a boolean union left two sheets touching along it).
    _, ids = np.unique(geom.vertices, axis=0, return_inverse=True)
    edges = np.sort(ids.reshape(-1)[geom.faces][:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts % 2 == 0).all())
