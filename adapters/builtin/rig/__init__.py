"""builtin-rig: a mesh to a skinned GLB on the CPU: a joint tree and bone-heat weights
(the pipeline: ``pipeline.py``)."""

from adapters.builtin.rig.adapter import RigAdapter

__all__ = ["RigAdapter"]
