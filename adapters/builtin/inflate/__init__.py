"""builtin-inflate: image to mesh on the CPU by inflating the picture's silhouette
(the pipeline: ``pipeline.py``)."""

from adapters.builtin.inflate.adapter import InflateAdapter

__all__ = ["InflateAdapter"]
