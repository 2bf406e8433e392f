"""builtin-project: texture a mesh on the CPU by projecting its picture onto it (the
pipeline: ``pipeline.py``)."""

from adapters.builtin.project.adapter import ProjectAdapter

__all__ = ["ProjectAdapter"]
