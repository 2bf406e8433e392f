"""builtin-convert's decimation: quadric edge collapse to a face budget, the surface kept
closed and unfolded where it was."""

from __future__ import annotations

import numpy as np

from adapters.base import InputError
from geometry.measures import is_closed


def decimate(
    vertices: np.ndarray, faces: np.ndarray, face_limit: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """At most ``face_limit`` triangles of the same surface; the method name used.

    fast_simplification first (about ten times faster than qslim). When it stalls above
    the limit, or gets there only by tearing a closed surface open or folding it flat,
    qslim starts over from the input. Raises InputError when neither reaches the limit
    intact.
    """
    import fast_simplification

    vertices = np.asarray(vertices, dtype=np.float64)
    closed = is_closed(faces)
    v, f = fast_simplification.simplify(
        vertices, np.asarray(faces, dtype=np.int32), target_count=face_limit
    )
    method = "fast_simplification"
    if not 0 < len(f) <= face_limit or (closed and not is_closed(f)):
        import igl

        # qslim returns no faces for a non-manifold input, more than asked when stuck.
        # (fast_simplification, stalled, returns more than asked, or nothing at all.)
        v, f, _, _ = igl.qslim(vertices, np.asarray(faces, dtype=np.int64), face_limit)
        method = "qslim"
        if len(f) == 0:
            raise InputError(
                f"cannot decimate to {face_limit} faces: the fast simplifier fails on this"
                " surface, and qslim needs an edge-manifold one (each edge shared by at most"
                " two faces), which it is not"
            )
        if len(f) > face_limit or (closed and not is_closed(f)):
            stuck = f" (qslim stops at {len(f)})" if len(f) > face_limit else ""
            raise InputError(
                f"cannot decimate to {face_limit} faces without tearing or folding the"
                f" surface{stuck}; use a larger face_limit"
            )
    used, f = np.unique(f, return_inverse=True)
    return np.asarray(v, dtype=np.float64)[used], f.reshape(-1, 3).astype(np.int64), method
