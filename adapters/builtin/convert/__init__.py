"""builtin-convert: a mesh to the job's output format, optionally decimated to a face
budget (the pipeline: ``pipeline.py``)."""

from adapters.builtin.convert.adapter import ConvertAdapter

__all__ = ["ConvertAdapter"]
