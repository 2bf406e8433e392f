"""builtin-parts: a mesh split into parts on the CPU, along its concave creases (the
pipeline: ``pipeline.py``)."""

from adapters.builtin.parts.adapter import PartsAdapter

__all__ = ["PartsAdapter"]
