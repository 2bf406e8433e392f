"""builtin-parts' adapter: a mesh in, its parts out as ``parts.glb`` (one node per part)
and ``labels.npy`` (the part of each input face) (``pipeline.segment``)."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np

from adapters.base import Adapter, Artifact, Item, Result
from adapters.builtin.parts.pipeline import PartsParams, segment


def parts_scene(mesh: Any, labels: np.ndarray) -> Any:
    """A Scene with one node and geometry per part, "part_0" (the largest) onwards;
    each part keeps the input's visuals (UVs and texture, or colours) for its faces."""
    import trimesh

    scene = trimesh.Scene()
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    pieces = mesh.submesh(
        [order[bounds[i] : bounds[i + 1]] for i in range(labels.max() + 1)],
        append=False,
        only_watertight=False,
    )
    for i, piece in enumerate(pieces):
        scene.add_geometry(piece, node_name=f"part_{i}", geom_name=f"part_{i}")
    return scene


def _plain(scene: Any) -> Any:
    """The same parts without their visuals, so a preview paints one colour per part."""
    import trimesh

    out = trimesh.Scene()
    for name, geom in scene.geometry.items():
        out.add_geometry(
            trimesh.Trimesh(geom.vertices, geom.faces, process=False),
            node_name=name,
            geom_name=name,
        )
    return out


class PartsAdapter(Adapter):
    """Nothing to load and no device to hold: it runs anywhere."""

    accepts = ("mesh",)
    requires = ("mesh",)
    Params = PartsParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        params = PartsParams.model_validate(item.params)
        t0 = time.perf_counter()
        mesh = item.mesh
        labels, info = segment(np.asarray(mesh.vertices), np.asarray(mesh.faces), params)
        t1 = time.perf_counter()
        scene = parts_scene(mesh, labels)
        glb = scene.export(file_type="glb")
        buf = io.BytesIO()
        np.save(buf, labels.astype(np.int32), allow_pickle=False)
        info["seconds"]["export"] = round(time.perf_counter() - t1, 4)
        info["seconds"]["total"] = round(time.perf_counter() - t0, 4)
        # The preview is drawn from Result.mesh: the same parts without the input's
        # texture or colours, so each part shows in a colour of its own.
        return Result(
            mesh=_plain(scene),
            artifacts=[Artifact("parts.glb", glb), Artifact("labels.npy", buf.getvalue())],
            mesh_artifact="parts.glb",
            info=info,
        )
