"""The subject of a picture: which pixels it covers, and its colours at given points.

Shared by builtin-inflate (the outline it inflates) and builtin-project (where a mesh
lands in its picture): both must see the same subject in the same picture.
"""

from __future__ import annotations

import numpy as np

from adapters.base import InputError

ALPHA_CUT = 128  # alpha at or above this is the subject
MIN_TRANSPARENT_SHARE = 0.002  # fewer transparent pixels than this is no "real" transparency
MIN_FOREGROUND_PX = 16
MAX_FOREGROUND_SHARE = 0.98  # above this no background is left to cut the subject from
# Colour distance (RGB, 0-441) within which a pixel counts as background: above JPEG noise
# and soft vignetting (~10-20), below the contrast of a subject one would photograph on it.
BORDER_TOLERANCE = 40.0


def foreground_mask(rgba: np.ndarray, *, tolerance: float = BORDER_TOLERANCE) -> np.ndarray:
    """Which pixels are the subject. Raises InputError when there is none to find."""
    alpha = rgba[..., 3]
    if (alpha < ALPHA_CUT).mean() >= MIN_TRANSPARENT_SHARE:
        mask = alpha >= ALPHA_CUT
        if not mask.any():
            raise InputError("picture is fully transparent: no subject to find")
    else:
        mask = _mask_from_border_colour(rgba[..., :3], tolerance)
    if mask.mean() > MAX_FOREGROUND_SHARE:
        raise InputError(
            "the subject fills the whole picture: no background to cut it from; leave a"
            " margin of background around it or use a transparent background"
        )
    mask = _drop_specks(mask)
    if mask.sum() < MIN_FOREGROUND_PX:
        raise InputError(
            f"the subject is too small ({int(mask.sum())} pixels;"
            f" at least {MIN_FOREGROUND_PX} needed)"
        )
    return mask | _small_holes(mask)


def _mask_from_border_colour(rgb: np.ndarray, tolerance: float) -> np.ndarray:
    """Background = the border's median colour, grown from the border through pixels near it.

    Growing from the border (rather than thresholding every pixel) keeps highlights and
    light shading inside the subject: they are near the background colour but enclosed.
    """
    from scipy import ndimage

    h, w, _ = rgb.shape
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    bg = np.median(border, axis=0)
    if np.mean(np.linalg.norm(border - bg, axis=1) <= tolerance) < 0.6:
        raise InputError(
            "cannot tell the subject from the background: the picture's border is not one flat"
            " colour; use a PNG with a transparent background"
        )
    dist = np.linalg.norm(rgb.astype(np.float32) - bg, axis=2)
    bg_like = dist <= tolerance
    labels, n = ndimage.label(bg_like)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge_labels = edge_labels[edge_labels > 0]
    mask = ~np.isin(labels, edge_labels)
    if not mask.any():
        raise InputError("picture has no foreground: every pixel matches the background colour")
    # Enclosed background-like regions: a real hole shows the background itself (nearly
    # exact colour) and is not tiny; a highlight or an off-white spot is only near it.
    index = np.arange(1, n + 1)
    sizes = ndimage.sum(bg_like, labels, index=index)
    closeness = ndimage.median(dist, labels, index=index)
    hole_min = max(64.0, 0.002 * h * w)
    holes = (sizes >= hole_min) & (closeness <= tolerance / 4)
    holes[edge_labels - 1] = False
    if holes.any():
        mask &= ~np.isin(labels, index[holes])
    return mask


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """Remove islands under 1 % of the largest one (dust, stray anti-aliasing)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= 0.01 * sizes.max()) + 1
    return np.isin(labels, keep)


def _small_holes(mask: np.ndarray) -> np.ndarray:
    """Pinholes (under 0.05 % of the picture) to fill; larger holes are kept."""
    from scipy import ndimage

    holes = ndimage.binary_fill_holes(mask) & ~mask
    labels, n = ndimage.label(holes)
    if n == 0:
        return np.zeros_like(mask)
    sizes = ndimage.sum(holes, labels, index=np.arange(1, n + 1))
    small = np.flatnonzero(sizes < max(4.0, 0.0005 * mask.size)) + 1
    return np.isin(labels, small)


def picture_colours(
    rgba: np.ndarray, mask: np.ndarray, px: np.ndarray, py: np.ndarray, *, blur_px: float = 0.0
) -> np.ndarray:
    """(N, 4) uint8: the picture's colour under each vertex at picture point (px, py).

    Pixels at the outline are anti-aliased blends with the background, so the picture
    is first extended outward from a slightly eroded subject (nearest inside colour):
    the background never tints the rim. Blurring by about half a grid cell before the
    bilinear lookup keeps fine detail from aliasing into speckled vertex colours.
    """
    from scipy import ndimage

    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    m = int(np.ceil(3 * blur_px)) + 4
    r0, r1 = max(rows.min() - m, 0), min(rows.max() + 1 + m, h)
    c0, c1 = max(cols.min() - m, 0), min(cols.max() + 1 + m, w)
    sub = mask[r0:r1, c0:c1]
    solid = ndimage.binary_erosion(sub, iterations=max(1, round(max(h, w) / 256)))
    if solid.sum() < MIN_FOREGROUND_PX:
        solid = sub
    _, (nr, nc) = ndimage.distance_transform_edt(~solid, return_indices=True)
    rgb = rgba[r0:r1, c0:c1, :3][nr, nc].astype(np.float32)
    if blur_px > 0.5:
        rgb = ndimage.gaussian_filter(rgb, (blur_px, blur_px, 0))
    at = [py - 0.5 - r0, px - 0.5 - c0]  # pixel centres sit at k + 0.5
    out = np.empty((len(px), 4), dtype=np.uint8)
    for ch in range(3):
        out[:, ch] = np.clip(
            ndimage.map_coordinates(rgb[..., ch], at, order=1, mode="nearest") + 0.5, 0, 255
        )
    out[:, 3] = 255
    return out
