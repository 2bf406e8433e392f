"""Geometry shared by the adapters and the runner: pure functions over numpy arrays and
trimesh meshes, no I/O and no state.

It imports nothing of the project, so any package may use it without reaching back up
the data path (DESIGN.md). Modules, each named for what it computes:

- ``camera``: the preview's views and the orthographic projection onto the screen.
- ``raster``: the z-buffer rasteriser (the nearest triangle per pixel).
- ``barycentric``: weights of points, or of pixel centres, in their triangles.
- ``render``: the headless preview of a Trimesh or Scene, and its silhouette.
- ``palette``: the colours that tell parts (and a rig's chains) apart.
- ``png``: pictures encoded as PNG.
- ``edges``: one key per edge, so that the faces of an edge find each other.
- ``measures``: face areas, closed-surface checks, the manifest's mesh statistics.
- ``weld``: corners at one position joined into one vertex.
- ``orient``: faces wound one way, outward.
- ``split``: long edges cut, two ways (halving, or equal parts zipped into ladders).
- ``proxy``: bounded, well-shaped copies of a mesh for the backends to work on.
"""
