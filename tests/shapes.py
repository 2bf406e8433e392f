"""Silhouettes drawn by the tests: symmetric, asymmetric, with holes and thin limbs."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SIZE = 200


def _draw(fn) -> np.ndarray:  # type: ignore[no-untyped-def]
    img = Image.new("L", (SIZE, SIZE), 0)
    fn(ImageDraw.Draw(img))
    return np.asarray(img) > 127


def disk() -> np.ndarray:
    return _draw(lambda d: d.ellipse([40, 30, 160, 170], fill=255))


def l_shape() -> np.ndarray:
    """Asymmetric both ways: a tall bar on the left, a foot to the right at the bottom."""

    def fn(d: ImageDraw.ImageDraw) -> None:
        d.rectangle([40, 20, 80, 170], fill=255)
        d.rectangle([40, 130, 170, 170], fill=255)

    return _draw(fn)


def ring() -> np.ndarray:
    def fn(d: ImageDraw.ImageDraw) -> None:
        d.ellipse([25, 25, 175, 175], fill=255)
        d.ellipse([75, 75, 125, 125], fill=0)

    return _draw(fn)


def star() -> np.ndarray:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 90, 40)
    pts = [(100 + r * np.cos(a), 105 + r * np.sin(a)) for r, a in zip(radii, angles, strict=True)]
    return _draw(lambda d: d.polygon(pts, fill=255))


def figure() -> np.ndarray:
    """A character: head off-centre, one arm raised, thin limbs."""

    def fn(d: ImageDraw.ImageDraw) -> None:
        d.ellipse([85, 10, 125, 50], fill=255)
        d.rounded_rectangle([80, 50, 125, 120], radius=12, fill=255)
        d.line([(85, 60), (40, 20)], fill=255, width=14)
        d.line([(120, 60), (170, 90)], fill=255, width=14)
        d.line([(90, 115), (70, 185)], fill=255, width=16)
        d.line([(115, 115), (135, 185)], fill=255, width=16)

    return _draw(fn)


SHAPES = {"disk": disk, "l_shape": l_shape, "ring": ring, "star": star, "figure": figure}


def picture(mask: np.ndarray, background: str, colour=(200, 60, 40)) -> np.ndarray:  # type: ignore[no-untyped-def]
    """RGBA: the mask in ``colour`` on a transparent, white or flat teal background."""
    h, w = mask.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    if background == "transparent":
        rgba[mask] = (*colour, 255)
        return rgba
    bg = {"white": (255, 255, 255), "teal": (40, 130, 140)}[background]
    rgba[...] = (*bg, 255)
    rgba[mask] = (*colour, 255)
    return rgba
