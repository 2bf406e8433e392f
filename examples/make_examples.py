"""Draw the bundled example pictures and write their job files (deterministic, no downloads).

    python examples/make_examples.py

`python manage.py demo` submits every `examples/*.json` and `examples/*.jsonl`, so these
files are the first thing a new user sees go through the system. The subjects are chosen
to exercise the built-in inflate backend: thin limbs, a hole, one-sided heads, a cap on a
stem, sharp points; and the three kinds of background it must cut a subject from:
transparent (alpha), pure white, and a flat colour.

Shapes are signed distance fields evaluated with numpy: edges are anti-aliased exactly
(coverage from the distance), and the same field gives a cheap "puffy" shading (a bevel
height map lit from the upper left), so the mesh's vertex colours read as a toy, not as
flat clip art. Every subject has a dark outline all round: on a flat background it keeps
light details (highlights, white stripes) enclosed, so the backend never mistakes them
for background.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

HERE = Path(__file__).resolve().parent
PICTURES = HERE / "pictures"

Colour = tuple[int, int, int]
Paint = Colour | np.ndarray  # one colour, or an (h, w, 3) array of 0-255 values
Sdf = np.ndarray  # signed distance in drawing units: negative inside

WHITE: Colour = (255, 255, 255)
TEAL: Colour = (34, 116, 126)
LIGHT_YELLOW: Colour = (252, 243, 196)
SKY: Colour = (194, 226, 246)
INK: Colour = (38, 30, 36)
BLUSH: Colour = (250, 130, 130)
LIGHT = np.array([-0.45, -0.6, 0.66]) / np.linalg.norm([-0.45, -0.6, 0.66])  # upper left
OUTLINE = 0.8  # outline width in drawing units (about 3 px)


# ---------------------------------------------------------------------------- canvas


class Canvas:
    """A picture in drawing units: the shorter side spans 100 units, (0, 0) is the centre.

    Subjects are described in these units so one drawing works at any pixel size; colour
    is kept premultiplied so painting over a transparent background composites correctly.
    """

    def __init__(self, width: int, height: int, background: Colour | None) -> None:
        self.scale = min(width, height) / 100  # pixels per unit
        self.px = 1 / self.scale  # units per pixel
        cols = (np.arange(width) + 0.5 - width / 2) * self.px
        rows = (np.arange(height) + 0.5 - height / 2) * self.px
        self.x, self.y = np.meshgrid(cols, rows)
        self.background = background
        self.alpha = np.zeros((height, width)) if background is None else np.ones((height, width))
        bg = np.zeros(3) if background is None else np.array(background) / 255
        self.rgb = np.broadcast_to(bg, (height, width, 3)).copy()

    def cover(self, d: Sdf) -> np.ndarray:
        """Share of each pixel inside the shape: exact anti-aliasing from the distance."""
        return np.clip(0.5 - d * self.scale, 0.0, 1.0)

    def paint(self, d: Sdf, colour: Paint, opacity: float = 1.0) -> None:
        """Composite a colour (or colour array) over the picture wherever ``d`` < 0."""
        a = (self.cover(d) * opacity)[..., None]
        col = np.broadcast_to(np.asarray(colour, dtype=float) / 255, self.rgb.shape)
        self.rgb = col * a + self.rgb * (1 - a)
        self.alpha = a[..., 0] + self.alpha * (1 - a[..., 0])

    def image(self) -> Image.Image:
        """RGBA with real alpha for a transparent background, plain RGB otherwise."""
        alpha = self.alpha[..., None]
        straight = np.divide(self.rgb, alpha, out=np.zeros_like(self.rgb), where=alpha > 1e-6)
        rgb = np.round(np.clip(straight, 0, 1) * 255).astype(np.uint8)
        if self.background is not None:
            return Image.fromarray(rgb, "RGB")
        a8 = np.round(self.alpha * 255).astype(np.uint8)
        rgb[a8 == 0] = 0  # no colour behind fully transparent pixels: smaller PNG
        return Image.fromarray(np.dstack([rgb, a8]), "RGBA")


# ---------------------------------------------------------------------------- shapes


def rotate(c: Canvas, cx: float, cy: float, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to (cx, cy), turned so a shape drawn upright appears rotated."""
    t = np.radians(degrees)
    dx, dy = c.x - cx, c.y - cy
    return dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)


def circle(c: Canvas, cx: float, cy: float, r: float) -> Sdf:
    """Exact distance to a circle: heads, eyes, buttons, spots."""
    return np.hypot(c.x - cx, c.y - cy) - r


def ellipse(c: Canvas, cx: float, cy: float, rx: float, ry: float, degrees: float = 0.0) -> Sdf:
    """Close-to-exact ellipse distance (Quilez's approximation): good for edges and bevels."""
    x, y = rotate(c, cx, cy, degrees)
    k0 = np.hypot(x / rx, y / ry)
    k1 = np.hypot(x / rx**2, y / ry**2)
    return np.where(k1 > 1e-9, k0 * (k0 - 1) / np.maximum(k1, 1e-9), -min(rx, ry))


def segment_offset(
    x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Offset from each point to the nearest point of segment a-b, in a bent or turned frame."""
    ex, ey = b[0] - a[0], b[1] - a[1]
    px, py = x - a[0], y - a[1]
    t = np.clip((px * ex + py * ey) / (ex * ex + ey * ey), 0, 1)
    return px - ex * t, py - ey * t


def capsule(c: Canvas, a: tuple[float, float], b: tuple[float, float], r: float) -> Sdf:
    """A segment with round ends: limbs, stems, sprinkles, icing strokes."""
    return np.hypot(*segment_offset(c.x, c.y, a, b)) - r


def teardrop(
    c: Canvas, a: tuple[float, float], b: tuple[float, float], ra: float, rb: float
) -> Sdf:
    """Two circles of different radii joined by their tangents: wings, fins, beaks, tails."""
    length = float(np.hypot(b[0] - a[0], b[1] - a[1]))
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    px, py = c.x - a[0], c.y - a[1]
    along, across = px * ux + py * uy, np.abs(px * uy - py * ux)
    sb = (ra - rb) / length
    ca = np.sqrt(1 - sb * sb)
    k = across * -sb + along * ca
    return np.where(
        k < 0,
        np.hypot(across, along) - ra,
        np.where(
            k > ca * length, np.hypot(across, along - length) - rb, across * ca + along * sb - ra
        ),
    )


def polygon(c: Canvas, points: Sequence[tuple[float, float]]) -> Sdf:
    """Exact signed distance to a closed polygon (winding-number sign)."""
    v = np.asarray(points, dtype=float)
    d2 = (c.x - v[0, 0]) ** 2 + (c.y - v[0, 1]) ** 2
    sign = np.ones_like(c.x)
    for i in range(len(v)):
        (xi, yi), (xj, yj) = v[i], v[i - 1]
        ex, ey, wx, wy = xj - xi, yj - yi, c.x - xi, c.y - yi
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0, 1)
        d2 = np.minimum(d2, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        up, down, left = c.y >= yi, c.y < yj, ex * wy > ey * wx
        sign = np.where((up & down & left) | (~up & ~down & ~left), -sign, sign)
    return sign * np.sqrt(d2)


def arc(c: Canvas, cx: float, cy: float, r: float, start: float, end: float, w: float) -> Sdf:
    """A stroke along a circle from ``start`` to ``end`` degrees (y down: 90 is the bottom)."""
    ang = np.degrees(np.arctan2(c.y - cy, c.x - cx)) % 360
    inside = (ang - start) % 360 <= (end - start) % 360
    along = np.abs(np.hypot(c.x - cx, c.y - cy) - r)
    ends = [
        np.hypot(c.x - cx - r * np.cos(np.radians(a)), c.y - cy - r * np.sin(np.radians(a)))
        for a in (start, end)
    ]
    return np.where(inside, along, np.minimum(*ends)) - w / 2


def smin(a: Sdf, b: Sdf, k: float) -> Sdf:
    """Union that blends the two shapes over ``k`` units: a head grows out of a body."""
    h = np.maximum(k - np.abs(a - b), 0) / k
    return np.minimum(a, b) - h * h * k / 4


def smax(a: Sdf, b: Sdf, k: float) -> Sdf:
    """Intersection with a rounded seam (a dome cut flat underneath, a clipped detail)."""
    return -smin(-a, -b, k)


def band(d: Sdf, width: float) -> Sdf:
    """The strip just inside a shape's edge: its outline."""
    return np.abs(d + width / 2) - width / 2


# ---------------------------------------------------------------------------- painting


def darker(colour: Paint, f: float = 0.55) -> Paint:
    return tuple(int(v * f) for v in colour) if isinstance(colour, tuple) else colour * f


def shade(
    c: Canvas, d: Sdf, base: Paint, bevel: float, gloss: float = 0.3, soft: float = 0.0
) -> np.ndarray:
    """Light the shape as if it were a pillow: a rounded bevel ``bevel`` units wide.

    The height is a quarter circle of the distance to the edge, so edges turn away from
    the light (dark rim lower right, bright rim upper left) and the flat top takes a soft
    highlight: the same look the inflated mesh will have. Where a part is narrower than
    the bevel, the distance has a ridge along its middle; ``soft`` (units) blurs the
    height away from the edge so such a part looks rounded rather than faceted.
    """
    t = np.clip(-d / bevel, 0, 1)
    height = bevel * np.sqrt(1 - (1 - t) ** 2)
    if soft > 0:
        height = height * (1 - t) + ndimage.gaussian_filter(height, soft * c.scale) * t
    gy, gx = np.gradient(height, c.px)
    n = np.dstack([-gx, -gy, np.ones_like(gx)])
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    lambert = np.clip(n @ LIGHT, 0, 1)[..., None]
    half = (LIGHT + [0, 0, 1]) / np.linalg.norm(LIGHT + [0, 0, 1])
    spec = (np.clip(n @ half, 0, 1) ** 30)[..., None]
    col = np.asarray(base, dtype=float) * (0.6 + 0.5 * lambert) + 255 * gloss * spec
    return np.clip(col, 0, 255)


def blob(
    c: Canvas,
    d: Sdf,
    base: Paint,
    bevel: float,
    line: Paint | None = None,
    gloss: float = 0.3,
    soft: float = 0.0,
) -> None:
    """A shaded, outlined part: the building block of every subject."""
    c.paint(d, shade(c, d, base, bevel, gloss, soft))
    c.paint(band(d, OUTLINE), darker(base) if line is None else line)


def eye(c: Canvas, cx: float, cy: float, r: float, tall: float = 1.3) -> None:
    """A dark oval eye with a catch light: what makes a blob read as a character."""
    c.paint(ellipse(c, cx, cy, r, r * tall), INK)
    c.paint(circle(c, cx + r * 0.3, cy - r * 0.45, r * 0.38), WHITE)


def cheek(c: Canvas, cx: float, cy: float, r: float) -> None:
    """A translucent blush: a touch of pink the vertex colours should carry over."""
    c.paint(ellipse(c, cx, cy, r, r * 0.6), BLUSH, opacity=0.55)


def gradient(c: Canvas, top: Colour, bottom: Colour, y0: float, y1: float) -> np.ndarray:
    """Colour blended from ``top`` at y0 to ``bottom`` at y1 (along the picture's height)."""
    t = np.clip((c.y - y0) / (y1 - y0), 0, 1)[..., None]
    return np.asarray(top, dtype=float) * (1 - t) + np.asarray(bottom, dtype=float) * t


# ---------------------------------------------------------------------------- subjects


def duck(c: Canvas) -> None:
    """Rubber duck facing right: head and beak on one side, tail on the other (asymmetric)."""
    body = ellipse(c, -2, 15, 36, 23)
    tail = teardrop(c, (-22, 8), (-42, -10), 9, 3.5)
    head = circle(c, 17, -17, 18.5)
    silhouette = smin(smin(body, tail, 10), head, 12)
    beak = teardrop(c, (32, -12), (46, -11), 6.5, 4.5)
    blob(c, beak, (245, 132, 28), bevel=4, line=(176, 80, 12))
    c.paint(capsule(c, (37, -10.5), (48, -10.5), 0.4), (176, 80, 12))
    blob(c, silhouette, (252, 204, 40), bevel=20, line=(196, 128, 12), soft=4)
    wing = teardrop(c, (0, 13), (-20, 2), 11, 4)
    blob(c, wing, (244, 180, 30), bevel=7, line=(196, 128, 12), soft=2)
    eye(c, 24, -22, 3.3)
    cheek(c, 26, -11, 4.5)


def donut(c: Canvas) -> None:
    """A ring with a real hole through it: the hole must stay a hole in the mesh."""
    r, theta = np.hypot(c.x, c.y), np.arctan2(c.y, c.x)
    dough = np.abs(r - 27) - 15
    blob(c, dough, gradient(c, (232, 168, 92), (196, 128, 62), -42, 42), bevel=15)
    wobble = 10.5 + 1.8 * np.sin(5 * theta + 0.4) + 1.1 * np.sin(9 * theta + 1.3)
    icing = np.abs(r - 26.5) - wobble
    blob(c, icing, (242, 122, 172), bevel=7, line=(196, 72, 126), gloss=0.45)
    sprinkles(c, icing)


def sprinkles(c: Canvas, icing: Sdf) -> None:
    """Short coloured strokes on the icing, placed by a fixed seed (same picture every run)."""
    rng = np.random.default_rng(7)
    palette = [(255, 255, 250), (86, 160, 240), (250, 214, 60), (104, 196, 120), (150, 90, 200)]
    for k in range(44):
        theta = 2 * np.pi * (k + rng.uniform(-0.3, 0.3)) / 44
        radius = 26.5 + (6.5 if k % 2 else -6.5) + rng.uniform(-1.5, 1.5)
        cx, cy = radius * np.cos(theta), radius * np.sin(theta)
        turn = rng.uniform(0, np.pi)
        dx, dy = 1.7 * np.cos(turn), 1.7 * np.sin(turn)
        stroke = smax(capsule(c, (cx - dx, cy - dy), (cx + dx, cy + dy), 0.85), icing + 1.2, 0.5)
        colour = palette[k % len(palette)]
        c.paint(stroke, shade(c, stroke, colour, bevel=0.8, gloss=0.2))


def mushroom(c: Canvas) -> None:
    """A wide domed cap on a narrow stem: an overhang the inflation must round off."""
    stem = polygon(c, [(-9, 0), (9, 0), (12, 40), (-12, 40)]) - 5
    blob(c, stem, (240, 224, 192), bevel=10, line=(150, 112, 74), soft=3)
    blob(c, ellipse(c, 0, 2, 40, 6), (214, 178, 134), bevel=3, line=(150, 112, 74))  # gills
    cap = smax(ellipse(c, 0, 2, 42, 43), c.y - 2, 6)
    blob(c, cap, (212, 52, 46), bevel=18, line=(128, 26, 26))
    for sx, sy, sr in ((-22, -20, 7.5), (5, -31, 6), (25, -15, 8), (-3, -12, 4.5), (-32, -5, 3.5)):
        spot = smax(circle(c, sx, sy, sr), cap + 1.6, 2)
        c.paint(spot, shade(c, spot, (246, 232, 214), bevel=2.5, gloss=0.15))
    c.paint(band(cap, OUTLINE), (128, 26, 26))
    eye(c, -5, 19, 2)
    eye(c, 5, 19, 2)
    c.paint(arc(c, 0, 22, 3.4, 30, 150, 1.1), INK)
    cheek(c, -9.5, 24, 2.8)
    cheek(c, 9.5, 24, 2.8)


def star(c: Canvas) -> None:
    """A five-point star with a face: sharp tapering arms, a hard case for inflation."""
    angles = np.radians(-90 + 36 * np.arange(10))
    radii = np.where(np.arange(10) % 2 == 0, 42.0, 18.0)
    points = list(zip(radii * np.cos(angles), 4 + radii * np.sin(angles), strict=True))
    shape = polygon(c, points) - 3  # rounded tips
    blob(c, shape, (252, 202, 48), bevel=13, line=(206, 112, 18))
    eye(c, -7.5, 1, 2.8)
    eye(c, 7.5, 1, 2.8)
    c.paint(arc(c, 0, 6, 6, 25, 155, 1.6), (90, 40, 20))
    cheek(c, -14, 9, 3.6)
    cheek(c, 14, 9, 3.6)


def gingerbread(c: Canvas) -> None:
    """Arms and legs: thin limbs that must come out round, not flat."""
    limbs = [
        ((-8, -10), (-34, -20)),
        ((8, -10), (34, -20)),
        ((-7, 18), (-19, 44)),
        ((7, 18), (19, 44)),
    ]
    shape = circle(c, 0, -35, 16)
    shape = smin(shape, polygon(c, [(-10, -22), (10, -22), (12, 22), (-12, 22)]) - 6, 6)
    for a, b in limbs:
        shape = smin(shape, capsule(c, a, b, 8), 5)
    blob(c, shape, (184, 108, 54), bevel=8, line=(112, 58, 24))
    for a, b in limbs:
        icing_zigzag(c, a, b)
    c.paint(arc(c, 0, -33, 8, 25, 155, 1.5), (255, 252, 244))
    for x in (-6, 6):
        c.paint(circle(c, x, -38, 2.4), (255, 252, 244))
        c.paint(circle(c, x, -38, 1.3), (70, 36, 18))
    for y, colour in ((-8, (222, 40, 50)), (2, (60, 170, 80)), (12, (60, 120, 222))):
        blob(c, circle(c, 0, y, 3.2), colour, bevel=2.5, gloss=0.5)


def icing_zigzag(c: Canvas, a: tuple[float, float], b: tuple[float, float]) -> None:
    """A white zigzag across the limb near its end, like piped icing on a wrist or ankle."""
    u = np.subtract(b, a) / np.hypot(*np.subtract(b, a))
    v = np.array([-u[1], u[0]])
    centre = np.asarray(b) - u * 5
    pts = [centre + v * s + u * (1.3 if i % 2 else -1.3) for i, s in enumerate((-6, -3, 0, 3, 6))]
    for p, q in zip(pts, pts[1:], strict=False):
        c.paint(capsule(c, tuple(p), tuple(q), 0.7), (255, 252, 244))


def fish(c: Canvas) -> None:
    """A clownfish facing left: round head at one end, forked tail at the other."""
    body = ellipse(c, -10, 0, 34, 20)
    tail = polygon(c, [(20, 0), (46, -19), (40, 0), (46, 19)]) - 3
    top_fin = ellipse(c, 0, -19, 19, 8, degrees=10)
    low_fin = ellipse(c, 6, 19, 9, 5.5, degrees=25)
    shape = smin(smin(smin(body, tail, 7), top_fin, 6), low_fin, 5)
    orange = (250, 128, 30)
    blob(c, shape, orange, bevel=14, line=(40, 26, 24), soft=3)
    for x0, w in ((-26, 4.6), (-2, 5.0), (21, 2.6)):
        stripe = np.abs(c.x - x0 - 0.012 * c.y**2) - w
        c.paint(smax(stripe - 1.1, shape + OUTLINE, 1), (40, 26, 24))
        inner = smax(stripe, shape + OUTLINE, 1)
        c.paint(inner, shade(c, inner, (250, 250, 250), bevel=3, gloss=0.1))
    blob(c, ellipse(c, -6, 7, 8, 4, degrees=30), (236, 104, 20), bevel=3, line=(40, 26, 24))
    c.paint(circle(c, -32, -5, 4.6), (250, 250, 250))
    eye(c, -33, -5, 2.6, tall=1.0)
    c.paint(band(circle(c, -32, -5, 4.6), 0.7), (40, 26, 24))
    c.paint(arc(c, -40, 1, 3.5, 70, 140, 0.9), (40, 26, 24))


def leaf(c: Canvas) -> None:
    """An autumn leaf, curved and tilted: asymmetric and flat, with a thin stalk to keep."""
    x, y = rotate(c, 2.3, -1.9, 50)  # leaf frame: midrib along y, tip at y = -34 (upper right)
    x = x + 0.005 * y**2 - 3  # bend the midrib
    lens = np.maximum(np.hypot(x - 24, y) - 42, np.hypot(x + 24, y) - 42)
    blade = smin(lens, np.hypot(x / 17, (y - 8) / 22) * 17 - 17, 10)
    stalk = np.hypot(*segment_offset(x, y, (0, 26), (-1, 40))) - 1.5
    blob(c, stalk, (126, 100, 44), bevel=1.5, line=(72, 56, 24))
    colour = leaf_colours(y)
    blob(c, blade, colour, bevel=9, line=colour * 0.5, soft=2)
    veins = np.hypot(*segment_offset(x, y, (0, 30), (0, -32))) - 0.6
    for k, y0 in enumerate((-22, -15, -8, -1, 6, 13, 20)):
        side = 1 if k % 2 else -1
        rib = np.hypot(*segment_offset(x, y, (0, y0), (side * 22, y0 - 14))) - 0.45
        veins = np.minimum(veins, rib)
    c.paint(smax(veins, blade + 2.5, 1), colour * 0.5 + 127, opacity=0.7)
    ladybird(c, 9, 10)


def leaf_colours(y: np.ndarray) -> np.ndarray:
    """Green at the stalk end turning to orange at the tip: colour detail along the leaf."""
    t = np.clip((34 - y) / 70, 0, 1)[..., None]
    green, yellow, orange = (
        np.array(v, float) for v in ((72, 150, 56), (214, 190, 52), (232, 110, 36))
    )
    return np.where(
        t < 0.5, green + (yellow - green) * t * 2, yellow + (orange - yellow) * (t - 0.5) * 2
    )


def ladybird(c: Canvas, cx: float, cy: float) -> None:
    """A small red beetle with spots sitting on the leaf: a second colour island inside."""
    blob(c, circle(c, cx - 4.2, cy - 3.4, 2.6), INK, bevel=2, line=(10, 10, 10))
    shell = ellipse(c, cx, cy, 5.5, 4.6, degrees=40)
    blob(c, shell, (214, 36, 36), bevel=4, line=(60, 10, 10), gloss=0.5)
    for sx, sy in ((1.5, -1.5), (-1.2, 2.2), (3, 2.4)):
        c.paint(circle(c, cx + sx, cy + sy, 1.0), INK)
    c.paint(capsule(c, (cx - 3.2, cy - 2.4), (cx + 3.6, cy + 3.4), 0.3), INK)


def cactus(c: Canvas) -> None:
    """A cactus in a pot: arms at two heights, a flower on top, a flared rim."""
    column = capsule(c, (0, -34), (0, 30), 12)
    left = smin(capsule(c, (-10, 4), (-26, 4), 6.5), capsule(c, (-26, 4), (-26, -20), 6.5), 3)
    right = smin(capsule(c, (10, 14), (23, 14), 6), capsule(c, (23, 14), (23, -2), 6), 3)
    plant = smin(smin(column, left, 4), right, 4)
    blob(c, plant, (84, 168, 78), bevel=9, line=(32, 92, 44), soft=2)
    for a, b in (
        ((-5, -38), (-5, 26)),
        ((5, -38), (5, 26)),
        ((-26, -20), (-26, 6)),
        ((23, -2), (23, 14)),
    ):
        c.paint(capsule(c, a, b, 0.45), (52, 124, 56), opacity=0.8)
    for sx, sy in ((-9, -28), (9, -18), (-9, -6), (9, 6), (-9, 18), (-30, -10), (27, 4), (0, -10)):
        for dx, dy in ((1.1, 1.1), (1.1, -1.1)):
            c.paint(capsule(c, (sx - dx, sy - dy), (sx + dx, sy + dy), 0.3), (250, 246, 214))
    flower(c, 0, -46)
    pot = polygon(c, [(-20, 28), (20, 28), (15, 52), (-15, 52)]) - 1.5
    blob(c, pot, (206, 104, 58), bevel=6, line=(120, 52, 24))
    rim = polygon(c, [(-24, 24), (24, 24), (24, 32), (-24, 32)]) - 1.5
    blob(c, rim, (224, 124, 72), bevel=3, line=(120, 52, 24))


def flower(c: Canvas, cx: float, cy: float) -> None:
    """Five pink petals around a yellow centre."""
    petals = np.full_like(c.x, np.inf)
    for k in range(5):
        t = np.radians(-90 + 72 * k)
        petals = np.minimum(petals, circle(c, cx + 4.4 * np.cos(t), cy + 4.4 * np.sin(t), 4))
    blob(c, petals, (244, 110, 160), bevel=3, line=(170, 50, 100))
    blob(c, circle(c, cx, cy, 2.6), (252, 214, 60), bevel=2, line=(190, 130, 20))


# ---------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class Example:
    """One picture and the job that processes it; ``job_file`` groups jobs into files."""

    name: str
    draw: Callable[[Canvas], None]
    size: tuple[int, int]  # width, height in pixels
    background: Colour | None  # None: transparent
    job_file: str
    extra: dict[str, Any] = field(default_factory=dict)


# Every picture is processed once. Four files hold one job object each; one .json holds a
# list and one .jsonl holds a job per line, so the demo exercises every job-file shape.
# Four of the jobs go on in chained stages ('then'), so every task runs in the demo.
EXAMPLES = [
    Example(
        "duck",
        duck,
        (512, 448),
        None,
        "duck.json",
        {"priority": 5, "then": [{"task": "texture"}, {"task": "rig"}]},
    ),
    Example("donut", donut, (448, 448), None, "donut.json"),
    Example("mushroom", mushroom, (384, 448), WHITE, "mushroom.json"),
    Example("star", star, (448, 448), TEAL, "star.json", {"output_format": "obj"}),
    # Body and tail meet at a waist: a shape with parts to find.
    Example("fish", fish, (512, 384), SKY, "fish_and_leaf.json", {"then": [{"task": "segment"}]}),
    Example("leaf", leaf, (448, 448), WHITE, "fish_and_leaf.json"),
    Example(
        "gingerbread",
        gingerbread,
        (416, 512),
        LIGHT_YELLOW,
        "gingerbread_and_cactus.jsonl",
        {"params": {"resolution": 192}, "then": [{"task": "texture"}, {"task": "rig"}]},
    ),
    Example(
        "cactus",
        cactus,
        (384, 512),
        None,
        "gingerbread_and_cactus.jsonl",
        {"then": [{"task": "convert", "output_format": "ply", "params": {"face_limit": 5000}}]},
    ),
]


def draw(example: Example) -> Image.Image:
    canvas = Canvas(*example.size, example.background)
    example.draw(canvas)
    return canvas.image()


def job(example: Example, seed: int) -> dict[str, Any]:
    """The job object: only fields from DESIGN.md's job-file table."""
    return {
        "name": example.name,
        "task": "mesh",
        "image": f"pictures/{example.name}.png",
        "priority": 0,
        "seed": seed,
        **example.extra,
    }


def write_jobs(examples: Sequence[Example]) -> list[Path]:
    """One object per .json file, a list when a .json file holds several, lines in .jsonl."""
    files: dict[str, list[dict[str, Any]]] = {}
    for seed, example in enumerate(examples, 1):
        files.setdefault(example.job_file, []).append(job(example, seed))
    written = []
    for name, jobs in files.items():
        path = HERE / name
        if name.endswith(".jsonl"):
            text = "".join(json.dumps(j) + "\n" for j in jobs)
        else:
            text = json.dumps(jobs[0] if len(jobs) == 1 else jobs, indent=2) + "\n"
        path.write_text(text)
        written.append(path)
    return written


def main() -> None:
    PICTURES.mkdir(exist_ok=True)
    for example in EXAMPLES:
        path = PICTURES / f"{example.name}.png"
        draw(example).save(path, optimize=True)
        print(f"{path.relative_to(HERE)}  {path.stat().st_size // 1024} KB")
    for path in write_jobs(EXAMPLES):
        print(path.relative_to(HERE))


if __name__ == "__main__":
    main()
