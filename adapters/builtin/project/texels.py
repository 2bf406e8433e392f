"""builtin-project's texels: which face (and where in it) each texel of the atlas shows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.barycentric import pixel_barycentric
from geometry.raster import face_image


@dataclass
class TexelSamples:
    rows: np.ndarray  # (S,) texel row (0 at the top of the image, i.e. v = 1)
    cols: np.ndarray  # (S,)
    faces: np.ndarray  # (S,) atlas face under (or, in the gutter, nearest to) the texel
    bary: np.ndarray  # (S, 3) weights in that face, summing to 1
    covered: np.ndarray  # (S,) bool: a triangle covers the texel centre (not gutter)


def texel_xy(uv: np.ndarray, size: int) -> np.ndarray:
    """UV (v up) to texel-image coordinates (x right, y down; texel centres at k + 0.5)."""
    return np.column_stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size])


def texel_samples(uv: np.ndarray, faces: np.ndarray, size: int, padding: int) -> TexelSamples:
    """Every texel a chart covers, and the gutter within ``padding`` texels of one."""
    from scipy import ndimage

    xy = texel_xy(uv, size)
    owner = face_image(xy, np.zeros(len(xy)), faces, size, size)
    # A chart too small to cover any texel centre (a clump of slivers) still gets the
    # texel under each face's centre, so it has a colour and a gutter like any other.
    centre = np.clip(xy[faces].mean(axis=1).astype(np.int64), 0, size - 1)
    bare = np.flatnonzero(owner[centre[:, 1], centre[:, 0]] < 0)
    owner[centre[bare, 1], centre[bare, 0]] = bare
    covered = owner >= 0
    # Chessboard distance: a square gutter, and several times faster than the exact EDT.
    dist, (nr, nc) = ndimage.distance_transform_cdt(
        ~covered, metric="chessboard", return_indices=True
    )
    rows, cols = np.nonzero(dist <= padding)
    face = owner[nr[rows, cols], nc[rows, cols]]
    # Weights of gutter texels fall outside their face: clipped and renormalised, the
    # point lands on the face's edge near the texel, and takes that edge's colour.
    bary = pixel_barycentric(xy, faces, face, rows, cols)
    bary /= np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)
    return TexelSamples(rows, cols, face, bary, covered[rows, cols])
