"""builtin-project's adapter: a mesh and its picture in, the textured mesh and its
``texture.png`` out (``pipeline.project``)."""

from __future__ import annotations

import time

from adapters.base import Adapter, Artifact, Item, Result
from adapters.builtin.project.pipeline import ProjectParams, project
from geometry.png import png_bytes
from storage.pictures import decode_rgba


class ProjectAdapter(Adapter):
    """Nothing to load and no device to hold: it runs anywhere."""

    accepts = ("mesh", "image")
    images_used = 1  # the first picture
    requires = ("mesh", "image")
    Params = ProjectParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        params = ProjectParams.model_validate(item.params)
        name = item.image_names[0] if item.image_names else "image"
        t0 = time.perf_counter()
        rgba = decode_rgba(item.images[0], name=name)
        mesh, texture, info = project(item.mesh, rgba, params)
        t1 = time.perf_counter()
        png = png_bytes(texture, compress_level=3)
        info["seconds"]["png"] = round(time.perf_counter() - t1, 4)
        info["seconds"]["total"] = round(time.perf_counter() - t0, 4)
        return Result(mesh=mesh, artifacts=[Artifact("texture.png", png)], info=info)
