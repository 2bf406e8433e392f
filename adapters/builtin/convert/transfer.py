"""builtin-convert's transfer of a mesh's look onto its decimated copy: UVs per chart,
vertex and face colours, each by the closest point on the original surface."""

from __future__ import annotations

from typing import Any

import numpy as np

from geometry.barycentric import barycentric


def closest_points(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(face index, barycentric weights) of the closest point on the surface to each point."""
    import igl

    _, index, closest = igl.point_mesh_squared_distance(
        np.asarray(points, dtype=np.float64),
        np.asarray(vertices, dtype=np.float64),
        np.asarray(faces, dtype=np.int64),
    )
    a, b, c = (np.asarray(vertices, dtype=np.float64)[faces[index, k]] for k in range(3))
    return index, barycentric(closest, a, b, c)


def uv_charts(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """Label per face of its UV island: faces joined by shared (unwelded) vertices."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(faces)
    rows = np.repeat(np.arange(n), 3)
    # Bipartite face-vertex graph: faces are nodes 0..n-1, vertices n..n+V-1.
    graph = coo_matrix(
        (np.ones(3 * n, dtype=np.int8), (rows, faces.ravel() + n)), shape=(n + n_vertices,) * 2
    )
    _, labels = connected_components(graph, directed=False)
    return labels[:n]


def transfer_texture(
    source: Any, vertices: np.ndarray, faces: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """UVs for the decimated surface from the textured ``source`` Trimesh.

    Returns (vertices, faces, uv, seam_source): vertices split where the corners of one
    vertex fall in different charts; ``seam_source`` maps each output vertex to the
    decimated vertex it came from (to share its normal across the seam).
    """
    src_v = np.asarray(source.vertices, dtype=np.float64)
    src_f = np.asarray(source.faces, dtype=np.int64)
    src_uv = np.asarray(source.visual.uv, dtype=np.float64)
    charts = uv_charts(src_f, len(src_v))
    nearest, _ = closest_points(vertices[faces].mean(axis=1), src_v, src_f)
    face_chart = charts[nearest]
    corner_uv = np.empty((len(faces), 3, 2))
    for chart in np.unique(face_chart):
        mine = face_chart == chart
        chart_faces = src_f[charts == chart]
        used, local = np.unique(chart_faces, return_inverse=True)
        local = local.reshape(-1, 3)
        index, weights = closest_points(vertices[faces[mine]].reshape(-1, 3), src_v[used], local)
        uv = np.einsum("ij,ijk->ik", weights, src_uv[used][local[index]])
        corner_uv[mine] = uv.reshape(-1, 3, 2)
    # One output vertex per distinct (vertex, uv); corners of a vertex inside one chart
    # project identically, so exact equality finds them.
    keys = np.column_stack([faces.reshape(-1).astype(np.float64), corner_uv.reshape(-1, 2)])
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    origin = unique[:, 0].astype(np.int64)
    return vertices[origin], inverse.reshape(-1, 3), unique[:, 1:], origin


def transfer_colours(source: Any, vertices: np.ndarray, faces: np.ndarray) -> dict[str, Any]:
    """Trimesh colour keywords (``vertex_colors`` or ``face_colors``) from ``source``."""
    src_v = np.asarray(source.vertices, dtype=np.float64)
    src_f = np.asarray(source.faces, dtype=np.int64)
    if source.visual.kind == "face":
        nearest, _ = closest_points(vertices[faces].mean(axis=1), src_v, src_f)
        return {"face_colors": np.asarray(source.visual.face_colors)[nearest]}
    index, weights = closest_points(vertices, src_v, src_f)
    colours = np.asarray(source.visual.vertex_colors, dtype=np.float64)[src_f[index]]
    mixed = np.einsum("ij,ijk->ik", weights, colours)
    return {"vertex_colors": np.clip(np.round(mixed), 0, 255).astype(np.uint8)}
