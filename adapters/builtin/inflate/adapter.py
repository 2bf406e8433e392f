"""builtin-inflate's adapter: one picture decoded and inflated (``pipeline.inflate``)."""

from __future__ import annotations

import time

from adapters.base import Adapter, InputError, Item, Result
from adapters.builtin.inflate.pipeline import InflateParams, inflate
from storage.pictures import decode_rgba


class InflateAdapter(Adapter):
    """Nothing to load and no device to hold: it runs anywhere, as the demo's default."""

    accepts = ("image",)
    images_used = 1  # the first picture
    Params = InflateParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        if not item.images:
            raise InputError("builtin-inflate needs an image; it cannot use a text prompt alone")
        params = InflateParams.model_validate(item.params)
        name = item.image_names[0] if item.image_names else "image"
        t0 = time.perf_counter()
        rgba = decode_rgba(item.images[0], name=name)
        mesh, info = inflate(rgba, params)
        info["seconds"]["total"] = round(time.perf_counter() - t0, 4)
        return Result(mesh=mesh, info=info)
