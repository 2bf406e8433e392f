"""builtin-project's visibility: which surface points the picture shows, from the front
or (mirrored through depth) from the back, by depth maps of the mesh."""

from __future__ import annotations

import numpy as np

from geometry.barycentric import pixel_barycentric
from geometry.raster import face_image

DEPTH_PX = 512  # depth maps of the front and back views
FACING = 0.05  # |n_z| below which a face counts as seen edge-on from both sides
DEPTH_SLACK = 0.01  # share of the mesh's size a surface may sit behind the depth map
MAX_SLOPE = 10.0  # depth change per pixel allowed for a surface seen nearly edge-on
EDGE_BLUR_PX = 3.0  # picture pixels along an occluding edge that blend both sides
MIN_EXTENT = 1e-6


def depth_image(
    xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, px: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """The nearest (smallest) depth per pixel, +inf where empty, over the box of ``xy``
    with ``px`` pixels along its longer side; its corner and pixel size."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pixel = max(float((hi - lo).max()), MIN_EXTENT) / px
    w, h = (int(np.ceil((hi[i] - lo[i]) / pixel)) + 1 for i in (0, 1))
    grid = (xy - lo) / pixel  # rows run up the image here; nobody looks at it
    img = face_image(grid, depth, faces, w, h)
    rows, cols = np.nonzero(img >= 0)
    fi = img[rows, cols]
    out = np.full((h, w), np.inf)
    weights = pixel_barycentric(grid, faces, fi, rows, cols)
    out[rows, cols] = (depth[faces[fi]] * weights).sum(axis=1)
    return out, lo, pixel


def in_front(
    xy: np.ndarray,
    depth: np.ndarray,
    facing: np.ndarray,
    image: np.ndarray,
    lo: np.ndarray,
    pixel: float,
    slack: float,
) -> np.ndarray:
    """Points no deeper than the depth image at their pixel, allowing for the slope of
    their own surface across a pixel (``facing``: the cosine of their normal to the view).

    The allowance follows the point's own slope, not the neighbourhood's: a point just
    behind the edge of an arm in front of it stays hidden, where taking the farthest
    depth around would let it through, with the arm's colour from the picture, and
    that colour would spread into everything hidden behind the arm.
    """
    row, col = _pixel_of(xy, lo, pixel, image.shape)
    return depth <= image[row, col] + slack + pixel * _slope(facing)


def _pixel_of(
    xy: np.ndarray, lo: np.ndarray, pixel: float, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    col = np.clip(((xy[:, 0] - lo[0]) / pixel).astype(np.int64), 0, shape[1] - 1)
    row = np.clip(((xy[:, 1] - lo[1]) / pixel).astype(np.int64), 0, shape[0] - 1)
    return row, col


def _slope(facing: np.ndarray) -> np.ndarray:
    """Depth change across one pixel of a surface at this cosine to the view, plus one."""
    cos = np.clip(np.abs(facing), 1.0 / np.sqrt(1.0 + MAX_SLOPE**2), 1.0)
    return 1.0 + np.sqrt(1.0 - cos * cos) / cos


def seen(
    points: np.ndarray,
    normal_z: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    picture_px: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which points the picture shows from the front, which its mirror from behind, and
    which of those are far enough from an occluding edge to lend their colour to hidden
    ones (``picture_px``: the picture's pixels across the mesh's longest side).

    Along the outline of an arm in front of the torso the picture blends the two, so the
    torso just behind the outline has the arm's colour there; handed on to the hidden
    torso, it would paint a shadow of the arm onto it.
    """
    from scipy import ndimage

    slack = DEPTH_SLACK * float(np.ptp(vertices, axis=0).max())
    xy, z, pz = vertices[:, :2], vertices[:, 2], points[:, 2]
    shown, clear = [], []
    for sign in (1.0, -1.0):  # the front, then the back
        image, lo, pixel = depth_image(xy, -sign * z, faces, DEPTH_PX)
        row, col = _pixel_of(points[:, :2], lo, pixel, image.shape)
        depth, allowance = -sign * pz, pixel * _slope(normal_z)
        # Occluding edges: neighbouring pixels further apart in depth than any surface's
        # own slope makes them, widened by the picture's blur.
        step = slack + pixel * MAX_SLOPE
        finite = np.where(np.isfinite(image), image, np.nan)  # NaN: compares False
        down = np.abs(np.diff(finite, axis=0)) > step
        across = np.abs(np.diff(finite, axis=1)) > step
        jump = np.zeros(image.shape, bool)
        jump[1:] |= down
        jump[:-1] |= down
        jump[:, 1:] |= across
        jump[:, :-1] |= across
        band = int(np.ceil(EDGE_BLUR_PX * DEPTH_PX / max(picture_px, 1.0)))
        near_edge = ndimage.binary_dilation(jump, iterations=band)[row, col]
        # On the far side of such an edge, the few pixels the picture does show of a
        # surface are blended with the occluder: count them hidden too.
        nearest = ndimage.minimum_filter(image, size=2 * band + 1)[row, col]
        behind = near_edge & (depth > nearest + slack + band * allowance)
        shown.append((depth <= image[row, col] + slack + allowance) & ~behind)
        clear.append(~near_edge)
    from_front = (normal_z >= -FACING) & shown[0]
    from_back = (normal_z <= FACING) & shown[1] & ~from_front
    trusted = (from_front & clear[0]) | (from_back & clear[1])
    return from_front, from_back, trusted
