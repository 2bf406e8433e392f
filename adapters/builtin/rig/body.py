"""builtin-rig's body: which connected piece of the surface is rigged, and where its
centre is (the root of the skeleton grows from there)."""

from __future__ import annotations

import numpy as np

from adapters.base import InputError
from geometry.edges import edge_uses, vertex_components
from geometry.measures import face_areas

MIN_VERTICES = 8  # fewer than this is no shape to rig
COMPARABLE_BODY = 0.25  # a separate piece with this share of the main body's area is a body


def split_bodies(points: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels per point, label of the main body): the connected piece of largest area.

    Raises InputError when another piece is comparable in size: which one to rig (or
    how to join them) is not ours to guess.
    """
    _, labels = vertex_components(len(points), tris)
    used = np.unique(tris)
    if len(used) < MIN_VERTICES:
        raise InputError(f"mesh has {len(used)} distinct vertices; too few to rig")
    face_label = labels[tris[:, 0]]
    area = face_areas(points, tris)
    per_body = np.bincount(face_label, weights=area, minlength=labels.max() + 1)
    main = int(np.argmax(per_body))
    if per_body[main] <= 0:
        raise InputError("mesh has no surface area: every triangle is degenerate")
    big = np.flatnonzero(per_body >= COMPARABLE_BODY * per_body[main])
    if len(big) > 1:
        shares = ", ".join(f"{a / per_body.sum():.0%}" for a in sorted(per_body[big])[::-1])
        raise InputError(
            f"mesh has {len(big)} separate bodies of comparable size (area shares {shares});"
            " builtin-rig rigs one connected body: submit each body as its own job"
        )
    return labels, main


def centre_of_mass(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Of the enclosed volume when the surface is closed, else of the surface itself."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    if (edge_uses(tris, len(points)) == 2).all():
        volume = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
        if abs(volume.sum()) > 1e-12:
            return (volume[:, None] * (a + b + c) / 4.0).sum(axis=0) / volume.sum()
    area = face_areas(points, tris)
    return (area[:, None] * (a + b + c) / 3.0).sum(axis=0) / area.sum()


def winding_number(points: np.ndarray, tris: np.ndarray, at: np.ndarray) -> float:
    """Exact winding number of the surface around one point: 1 inside, 0 outside.

    The sum of the triangles' signed solid angles (Van Oosterom and Strackee); for a
    single point this beats building libigl's tree.
    """
    a, b, c = (points[tris[:, i]] - at for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    det = np.einsum("ij,ij->i", a, np.cross(b, c))
    dots = np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la
    den = la * lb * lc + dots + np.einsum("ij,ij->i", c, a) * lb
    return float(2.0 * np.arctan2(det, den).sum() / (4.0 * np.pi))
