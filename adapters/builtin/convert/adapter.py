"""builtin-convert's adapter: a mesh in, the mesh to write out (``pipeline.convert``);
the runner writes it in the job's output format."""

from __future__ import annotations

from adapters.base import Adapter, Item, Result
from adapters.builtin.convert.pipeline import ConvertParams, convert


class ConvertAdapter(Adapter):
    """Nothing to load: runs on any CPU."""

    accepts = ("mesh",)
    requires = ("mesh",)
    Params = ConvertParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        params = ConvertParams.model_validate(item.params)
        mesh, info = convert(item.mesh, params)
        return Result(mesh=mesh, info=info)
