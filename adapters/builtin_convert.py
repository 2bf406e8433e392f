"""builtin-convert: a mesh to the job's output format, optionally decimated to a face budget.

The format change itself is the runner's: it writes ``Result.mesh`` with
``storage.meshes.export_mesh`` like every stage's mesh. With no parameters the mesh goes
through untouched, so a round trip keeps its vertex and face counts (STL excepted: it
stores every triangle's corners apart). With ``face_limit`` the pipeline, each step a
function over numpy arrays, is:

1. ``weld_positions``: vertices at the same position become one. A textured mesh is
   split along its UV seams and an STL is a triangle soup; unwelded, every seam would be
   an open border the decimator has to keep, and collapsing its two sides apart would
   crack the surface.
2. ``decimate``: quadric edge collapse (fast_simplification) down to ``face_limit``
   faces, which keeps the silhouette: flat areas lose faces first, outlines last. Where
   it stalls above the limit (thin parts, where every further collapse would fold a
   face over), or reaches it only by tearing a closed surface open or folding it flat,
   libigl's qslim starts over from the input.
3. ``transfer_texture``: each new face takes the UV island ("chart") of the original
   face nearest its centroid; each of its corners then gets the UV of the closest point
   on that chart of the original surface (barycentric). Corners of one vertex that
   disagree (a seam) split the vertex, so no triangle stretches across the atlas. The
   texture image is kept as it is. ``transfer_colours`` does the same for vertex colours
   (closest point, barycentric) and face colours (the face nearest each new centroid).

``weld`` (optional) merges duplicate vertices in the result, vertices with different
UVs kept apart; it changes the vertex count on purpose (e.g. an STL's soup to an
indexed mesh).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.base import Adapter, InputError, Item, Result
from runner.measures import mesh_stats

MAX_FACE_LIMIT = 10_000_000


class ConvertParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    face_limit: int | None = Field(
        None,
        ge=4,
        le=MAX_FACE_LIMIT,
        description="decimate to at most this many triangles (none: keep every face)",
    )
    weld: bool = Field(
        False, description="merge duplicate vertices (same position and UV) in the result"
    )


# ---------------------------------------------------------------------------- geometry


def weld_positions(
    vertices: np.ndarray, faces: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique vertices, faces into them, index of each old vertex's unique one).

    Faces that collapse to a line or a point by the merge are dropped.
    """
    from trimesh import grouping, tol, util

    unique, inverse = grouping.unique_rows(vertices, digits=util.decimal_to_digits(tol.merge))
    welded = inverse[faces]
    keep = (
        (welded[:, 0] != welded[:, 1])
        & (welded[:, 1] != welded[:, 2])
        & (welded[:, 0] != welded[:, 2])
    )
    return np.asarray(vertices)[unique], welded[keep], inverse


def decimate(
    vertices: np.ndarray, faces: np.ndarray, face_limit: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """At most ``face_limit`` triangles of the same surface; the method name used.

    fast_simplification first (about ten times faster than qslim). When it stalls above
    the limit, or gets there only by tearing a closed surface open or folding it flat,
    qslim starts over from the input. Raises InputError when neither reaches the limit
    intact.
    """
    import fast_simplification

    vertices = np.asarray(vertices, dtype=np.float64)
    closed = is_closed(faces)
    v, f = fast_simplification.simplify(
        vertices, np.asarray(faces, dtype=np.int32), target_count=face_limit
    )
    method = "fast_simplification"
    if not 0 < len(f) <= face_limit or (closed and not is_closed(f)):
        import igl

        # qslim returns no faces for a non-manifold input, more than asked when stuck.
        # (fast_simplification, stalled, returns more than asked, or nothing at all.)
        v, f, _, _ = igl.qslim(vertices, np.asarray(faces, dtype=np.int64), face_limit)
        method = "qslim"
        if len(f) == 0:
            raise InputError(
                f"cannot decimate to {face_limit} faces: the fast simplifier fails on this"
                " surface, and qslim needs an edge-manifold one (each edge shared by at most"
                " two faces), which it is not"
            )
        if len(f) > face_limit or (closed and not is_closed(f)):
            stuck = f" (qslim stops at {len(f)})" if len(f) > face_limit else ""
            raise InputError(
                f"cannot decimate to {face_limit} faces without tearing or folding the"
                f" surface{stuck}; use a larger face_limit"
            )
    used, f = np.unique(f, return_inverse=True)
    return np.asarray(v, dtype=np.float64)[used], f.reshape(-1, 3).astype(np.int64), method


def is_closed(faces: np.ndarray) -> bool:
    """Whether every edge joins exactly two faces and no two faces are the same triangle
    (a closed surface, not one folded flat onto itself)."""
    f = np.sort(np.asarray(faces, dtype=np.int64), axis=1)
    if len(f) == 0:
        return False
    rows = f[np.lexsort((f[:, 2], f[:, 1], f[:, 0]))]
    if (rows[1:] == rows[:-1]).all(axis=1).any():
        return False
    n = int(f.max()) + 1
    edges = np.concatenate([f[:, 0] * n + f[:, 1], f[:, 1] * n + f[:, 2], f[:, 0] * n + f[:, 2]])
    _, counts = np.unique(edges, return_counts=True)
    return bool((counts == 2).all())


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


def barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N, 3) weights of points ``p`` in triangles (a, b, c); degenerate ones -> corner a."""
    v0, v1, v2 = b - a, c - a, p - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    den = d00 * d11 - d01 * d01
    ok = np.abs(den) > 1e-30
    safe = np.where(ok, den, 1.0)
    w1 = np.where(ok, (d11 * d20 - d01 * d21) / safe, 0.0)
    w2 = np.where(ok, (d00 * d21 - d01 * d20) / safe, 0.0)
    weights = np.column_stack([1.0 - w1 - w2, w1, w2])
    return np.clip(weights, 0.0, 1.0) / np.clip(weights, 0.0, 1.0).sum(axis=1, keepdims=True)


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


# ---------------------------------------------------------------------------- mesh


def simplify_mesh(mesh: Any, face_limit: int) -> tuple[Any, dict[str, Any]]:
    """``mesh`` decimated to at most ``face_limit`` faces, its texture or colours carried."""
    import trimesh

    clock = [time.perf_counter()]
    v, f, _ = weld_positions(np.asarray(mesh.vertices), np.asarray(mesh.faces))
    clock.append(time.perf_counter())
    v, f, method = decimate(v, f, face_limit)
    clock.append(time.perf_counter())
    visual = mesh.visual
    uv = getattr(visual, "uv", None)
    info: dict[str, Any] = {"method": method, "face_limit": face_limit}
    if visual.kind == "texture" and uv is not None and len(uv) == len(mesh.vertices):
        normals = trimesh.Trimesh(v, f, process=False).vertex_normals
        v2, f2, uv2, origin = transfer_texture(mesh, v, f)
        out = trimesh.Trimesh(
            v2,
            f2,
            vertex_normals=normals[origin],  # one normal across a seam: no shading crease
            visual=trimesh.visual.TextureVisuals(uv=uv2, material=visual.material),
            process=False,
        )
        info["visual"] = "texture kept: UVs transferred by closest point per UV chart"
        info["seam_vertices"] = int(len(v2) - len(v))
    elif visual.kind in ("vertex", "face"):
        out = trimesh.Trimesh(v, f, process=False, **transfer_colours(mesh, v, f))
        info["visual"] = f"{visual.kind} colours transferred by closest point"
    else:
        out = trimesh.Trimesh(v, f, process=False)
        info["visual"] = "none" if visual.kind is None else "material kept (no UVs)"
        if visual.kind == "texture":
            out.visual = trimesh.visual.TextureVisuals(material=visual.material)
    clock.append(time.perf_counter())
    info["seconds"] = {
        step: round(float(dt), 4)
        for step, dt in zip(("weld_positions", "decimate", "transfer"), np.diff(clock), strict=True)
    }
    return out, info


def convert(mesh: Any, params: ConvertParams) -> tuple[Any, dict[str, Any]]:
    """The whole backend on one loaded mesh: the mesh to write, and what happened."""
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    info: dict[str, Any] = {"before": mesh_stats(mesh)}
    out = mesh
    if params.face_limit is not None and len(mesh.faces) > params.face_limit:
        out, done = simplify_mesh(mesh, params.face_limit)
        seconds.update(done.pop("seconds"))
        info["decimation"] = done
    elif params.face_limit is not None:
        info["decimation"] = {"face_limit": params.face_limit, "skipped": "already within"}
    if params.weld:
        t = time.perf_counter()
        out = out.copy() if out is mesh else out
        # merge_norm: normals do not keep vertices apart (an STL's are per face);
        # merge_tex=False: different UVs do (a seam stays a seam).
        out.merge_vertices(merge_tex=False, merge_norm=True)
        seconds["weld"] = round(time.perf_counter() - t, 4)
    info["after"] = mesh_stats(out)
    seconds["total"] = round(time.perf_counter() - t0, 4)
    info["seconds"] = seconds
    return out, info


# ---------------------------------------------------------------------------- adapter


class ConvertAdapter(Adapter):
    """Nothing to load: runs on any CPU."""

    tasks = ("convert",)
    accepts = ("mesh",)
    requires = ("mesh",)
    Params = ConvertParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        params = ConvertParams.model_validate(item.params)
        mesh, info = convert(item.mesh, params)
        return Result(mesh=mesh, info=info)
