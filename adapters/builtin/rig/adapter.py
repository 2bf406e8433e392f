"""builtin-rig's adapter: a mesh in, ``rigged.glb`` (the mesh bound to its skeleton) and
a preview of the bones out (``pipeline.rig``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from adapters.base import Adapter, Artifact, Item, Result
from adapters.builtin.rig.gltf_skin import skinned_glb
from adapters.builtin.rig.pipeline import RigParams, rig
from adapters.builtin.rig.preview import bone_preview
from geometry.render import base_colour_image


def _visuals(mesh: Any) -> dict[str, Any]:
    """What of the input's look the GLB can carry: UVs with the base colour picture, or
    vertex colours, or a flat base colour. glTF multiplies the colour factor into the
    picture and the vertex colours, so with either the factor is white unless given."""
    import io

    visual = mesh.visual
    out: dict[str, Any] = {}
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = base_colour_image(material)
        factor = getattr(material, "baseColorFactor", None)
        if factor is None:
            factor = getattr(material, "diffuse", None)  # SimpleMaterial (OBJ)
        if factor is not None:
            f = np.asarray(factor)
            f = f / 255.0 if f.dtype.kind in "ui" else f.astype(np.float64)
            out["base_colour"] = (*(float(x) for x in f[:3]), float(f[3]) if len(f) > 3 else 1.0)
        elif image is not None:
            out["base_colour"] = (1.0, 1.0, 1.0, 1.0)
        if image is not None:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            out["uv"], out["texture_png"] = np.asarray(visual.uv, np.float64), buf.getvalue()
    elif visual.kind in ("vertex", "face"):
        out["colours"] = np.asarray(visual.vertex_colors, np.uint8)
        out["base_colour"] = (1.0, 1.0, 1.0, 1.0)
    return out


class RigAdapter(Adapter):
    """Nothing to load: a CPU backend that runs anywhere."""

    accepts = ("mesh",)
    requires = ("mesh",)
    Params = RigParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        params = RigParams.model_validate(item.params)
        mesh = item.mesh
        t0 = time.perf_counter()
        vertices, faces = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces)
        skin, info = rig(vertices, faces, params)
        t1 = time.perf_counter()
        skel = skin.skeleton
        glb = skinned_glb(
            vertices,
            faces,
            np.asarray(mesh.vertex_normals),
            skel.positions,
            skel.parents,
            skel.names,
            skin.joint_index,
            skin.weights,
            **_visuals(mesh),
        )
        t2 = time.perf_counter()
        preview = bone_preview(vertices, faces, skin)
        t3 = time.perf_counter()
        info["seconds"].update(
            glb=round(t2 - t1, 4), preview=round(t3 - t2, 4), total=round(t3 - t0, 4)
        )
        return Result(
            mesh=mesh,
            artifacts=[Artifact("rigged.glb", glb)],
            mesh_artifact="rigged.glb",
            preview_rgb=preview,
            info=info,
        )
