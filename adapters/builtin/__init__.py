"""The built-in backends: CPU models that need no weights, so the system runs anywhere.

One package per backend (``inflate``, ``project``, ``parts``, ``rig``, ``convert``) and
``noop``. In each, ``adapter.py`` is the short shell the registry names (parameters in,
inputs decoded, a ``Result`` out); ``pipeline.py`` is the whole backend as one function
over arrays and meshes, and the modules beside it its steps. Geometry that is not
peculiar to one backend lives in ``geometry/``.
"""
