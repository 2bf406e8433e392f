"""builtin-convert: a mesh to the job's output format, optionally decimated to a face budget.

The format change itself is the runner's: it writes ``Result.mesh`` with
``storage.mesh_export.export_mesh`` like every stage's mesh. With no parameters the mesh goes
through untouched, so a round trip keeps its vertex and face counts (STL excepted: it
stores every triangle's corners apart). With ``face_limit`` the pipeline, each step a
function over numpy arrays, is:

1. ``geometry.weld`` at trimesh's merge tolerance: vertices at the same position become
   one. A textured mesh is split along its UV seams and an STL is a triangle soup;
   unwelded, every seam would be an open border the decimator has to keep, and
   collapsing its two sides apart would crack the surface.
2. ``decimate.decimate``: quadric edge collapse (fast_simplification) down to
   ``face_limit`` faces, which keeps the silhouette: flat areas lose faces first,
   outlines last. Where it stalls above the limit (thin parts, where every further
   collapse would fold a face over), or reaches it only by tearing a closed surface open
   or folding it flat, libigl's qslim starts over from the input.
3. ``transfer.transfer_texture``: each new face takes the UV island ("chart") of the
   original face nearest its centroid; each of its corners then gets the UV of the
   closest point on that chart of the original surface (barycentric). Corners of one
   vertex that disagree (a seam) split the vertex, so no triangle stretches across the
   atlas. The texture image is kept as it is. ``transfer_colours`` does the same for
   vertex colours (closest point, barycentric) and face colours (the face nearest each
   new centroid).

``weld`` (optional) merges duplicate vertices in the result, vertices with different
UVs kept apart; it changes the vertex count on purpose (e.g. an STL's soup to an
indexed mesh).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.builtin.convert.decimate import decimate
from adapters.builtin.convert.transfer import transfer_colours, transfer_texture
from geometry.measures import mesh_stats
from geometry.weld import rounded_keys, weld

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


def simplify_mesh(mesh: Any, face_limit: int) -> tuple[Any, dict[str, Any]]:
    """``mesh`` decimated to at most ``face_limit`` faces, its texture or colours carried."""
    import trimesh

    clock = [time.perf_counter()]
    v, f, _, _ = weld(mesh.vertices, mesh.faces, rounded_keys(mesh.vertices))
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
