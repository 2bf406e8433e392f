"""The preview's camera: orthographic views of the origin and their mapping to pixels.

The preview, the rig's bone overlay and the texture projection all put 3D points on a
2D grid the same way: rotate into the camera's frame, then scale a box of it onto a box
of pixels with y pointing down. ``to_screen`` is that one mapping.
"""

from __future__ import annotations

import numpy as np

VIEWS = {"three_quarter": (35.0, 25.0), "front": (0.0, 0.0)}  # (yaw, pitch) in degrees
MARGIN = 0.86  # share of the frame the object's larger screen extent fills


def camera(view: str) -> np.ndarray:
    """Rows: right, up, toward-camera, for an orthographic camera looking at the origin.

    "three_quarter" sits above, in front and to the right (+X, +Y, +Z), so the front
    (+Z) and the right side both show and a mirrored mesh would look wrong.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {sorted(VIEWS)}")
    yaw, pitch = (np.radians(a) for a in VIEWS[view])
    back = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back])


def framing(xy: np.ndarray, size: float, margin: float = MARGIN) -> tuple[np.ndarray, float]:
    """(centre, pixels per unit) that fit the box of ``xy`` into a ``size`` square, its
    larger side filling ``margin`` of it: the preview's framing, which the rig's bone
    overlay must match point for point."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return (lo + hi) / 2, margin * size / max(float((hi - lo).max()), 1e-9)


def to_screen(
    xy: np.ndarray, centre: np.ndarray, scale: float | np.ndarray, target: tuple[float, float]
) -> np.ndarray:
    """(N, 2) pixel coordinates (x right, y down) of points ``xy`` (x right, y up): ``centre``
    lands on pixel point ``target``, ``scale`` pixels per unit (one, or one per axis)."""
    sx, sy = scale if isinstance(scale, np.ndarray) else (scale, scale)
    return np.column_stack(
        [(xy[:, 0] - centre[0]) * sx + target[0], target[1] - (xy[:, 1] - centre[1]) * sy]
    )
