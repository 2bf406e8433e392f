"""Draw the bundled example pictures and their job files (deterministic, no downloads).

    python examples/make_examples.py

Six subjects with different silhouettes (thin limbs, a hole, a one-sided head, a cap
on a stem) on the three kinds of background the inflate backend handles: transparent,
white, and a flat colour.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SIZE = 448
SS = 3  # drawn 3x larger, then reduced: anti-aliased edges

Colour = tuple[int, int, int]


def _canvas(background: Colour | None) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    big = SIZE * SS
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0) if background is None else (*background, 255))
    return img, ImageDraw.Draw(img)


def _finish(img: Image.Image, background: Colour | None) -> Image.Image:
    img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return img if background is None else img.convert("RGB")


def _s(*v: float) -> list[float]:
    """Coordinates given on a 0-100 grid, scaled to the canvas."""
    return [x * SIZE * SS / 100 for x in v]


def _shaded_ellipse(
    draw: ImageDraw.ImageDraw, box: list[float], base: Colour, steps: int = 14
) -> None:
    """Concentric ellipses from the base colour to a highlight, offset up-left: a cheap dome."""
    x0, y0, x1, y1 = box
    for i in range(steps):
        t = i / steps
        inset_x, inset_y = (x1 - x0) * t * 0.42, (y1 - y0) * t * 0.42
        shift_x, shift_y = -(x1 - x0) * t * 0.12, -(y1 - y0) * t * 0.14
        col = tuple(min(255, int(c + (255 - c) * t * 0.45)) for c in base)
        draw.ellipse(
            [
                x0 + inset_x + shift_x,
                y0 + inset_y + shift_y,
                x1 - inset_x + shift_x,
                y1 - inset_y + shift_y,
            ],
            fill=col,
        )


def duck(background: Colour | None) -> Image.Image:
    """Rubber duck facing right: head and beak on one side (an asymmetric silhouette)."""
    img, d = _canvas(background)
    _shaded_ellipse(d, _s(12, 42, 78, 86), (236, 190, 20))  # body
    d.polygon(_s(12, 58, 4, 44, 22, 52), fill=(228, 178, 16))  # tail
    _shaded_ellipse(d, _s(44, 14, 80, 50), (240, 198, 30))  # head
    d.polygon(_s(76, 30, 96, 35, 76, 40), fill=(240, 120, 20))  # beak
    d.ellipse(_s(64, 24, 70, 30), fill=(25, 25, 30))
    d.ellipse(_s(65.5, 25, 67.5, 27), fill=(255, 255, 255))
    d.arc(_s(24, 54, 60, 78), 200, 340, fill=(205, 150, 10), width=int(SS * 5))  # wing
    return _finish(img, background)


def mushroom(background: Colour | None) -> Image.Image:
    """A cap on a stem: a wide dome over a narrow column."""
    img, d = _canvas(background)
    d.rounded_rectangle(_s(38, 42, 62, 92), radius=SIZE * SS * 0.06, fill=(238, 226, 200))
    d.rectangle(_s(44, 48, 48, 88), fill=(222, 208, 180))
    d.pieslice(_s(8, 10, 92, 86), 180, 360, fill=(196, 40, 36))
    d.ellipse(_s(8, 40, 92, 56), fill=(176, 32, 30))
    for cx, cy, r in (
        (30, 28, 6),
        (52, 20, 5),
        (70, 32, 7),
        (46, 38, 4),
        (22, 42, 3.5),
        (80, 44, 3),
    ):
        d.ellipse(_s(cx - r, cy - r, cx + r, cy + r), fill=(250, 246, 236))
    return _finish(img, background)


def star(background: Colour | None) -> Image.Image:
    """A five-point star with a face: sharp, tapering arms."""
    img, d = _canvas(background)
    pts = []
    for k in range(10):
        ang = -math.pi / 2 + k * math.pi / 5
        r = 46 if k % 2 == 0 else 20
        pts.append((50 + r * math.cos(ang), 53 + r * math.sin(ang)))
    d.polygon([c for p in pts for c in _s(*p)], fill=(250, 196, 40))
    inner = [(50 + (x - 50) * 0.6, 53 + (y - 53) * 0.6) for x, y in pts]
    d.polygon([c for p in inner for c in _s(*p)], fill=(255, 216, 90))
    d.ellipse(_s(40, 44, 46, 52), fill=(40, 30, 20))
    d.ellipse(_s(54, 44, 60, 52), fill=(40, 30, 20))
    d.arc(_s(42, 50, 58, 62), 20, 160, fill=(40, 30, 20), width=int(SS * 3))
    return _finish(img, background)


def donut(background: Colour | None) -> Image.Image:
    """A ring with a real hole, icing and sprinkles."""
    img, d = _canvas(background)
    d.ellipse(_s(8, 8, 92, 92), fill=(196, 140, 80))
    d.ellipse(_s(13, 12, 87, 84), fill=(236, 120, 170))
    colours = [(255, 255, 255), (80, 160, 240), (250, 220, 60), (110, 200, 120)]
    for k in range(28):
        ang = k * 2 * math.pi / 28 + 0.3
        r = 28 + 6 * math.sin(k * 1.7)
        cx, cy = 50 + r * math.cos(ang), 48 + r * math.sin(ang)
        dx, dy = 2.2 * math.cos(ang * 3), 2.2 * math.sin(ang * 3)
        d.line(_s(cx - dx, cy - dy, cx + dx, cy + dy), fill=colours[k % 4], width=int(SS * 4))
    hole = (0, 0, 0, 0) if background is None else (*background, 255)
    d.ellipse(_s(35, 35, 65, 65), fill=(176, 120, 64))
    d.ellipse(_s(37, 37, 63, 63), fill=hole)
    return _finish(img, background)


def gingerbread(background: Colour | None) -> Image.Image:
    """Arms and legs: thin limbs that must come out round, not flat."""
    img, d = _canvas(background)
    brown = (170, 100, 50)
    w = SIZE * SS * 0.13
    for a, b in (
        ((50, 48), (16, 36)),
        ((50, 48), (84, 36)),
        ((46, 62), (28, 90)),
        ((54, 62), (72, 90)),
    ):
        d.line(_s(*a, *b), fill=brown, width=int(w))
        for x, y in (a, b):
            d.ellipse(_s(x - 6.5, y - 6.5, x + 6.5, y + 6.5), fill=brown)
    d.rounded_rectangle(_s(34, 36, 66, 72), radius=SIZE * SS * 0.08, fill=brown)
    d.ellipse(_s(33, 6, 67, 40), fill=brown)
    for x, y in ((44, 20), (56, 20)):
        d.ellipse(_s(x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=(255, 255, 255))
    d.arc(_s(42, 22, 58, 33), 20, 160, fill=(255, 255, 255), width=int(SS * 2.5))
    for y in (46, 54, 62):
        d.ellipse(_s(48, y - 2.5, 53, y + 2.5), fill=(60, 170, 90))
    img = img.filter(ImageFilter.SMOOTH)
    return _finish(img, background)


def cactus(background: Colour | None) -> Image.Image:
    """A cactus in a pot: one arm up on the left, one lower on the right."""
    img, d = _canvas(background)
    green, dark = (70, 150, 70), (50, 120, 55)
    d.rounded_rectangle(_s(40, 10, 60, 72), radius=SIZE * SS * 0.1, fill=green)
    d.rounded_rectangle(_s(18, 26, 32, 50), radius=SIZE * SS * 0.07, fill=green)
    d.rounded_rectangle(_s(18, 42, 46, 54), radius=SIZE * SS * 0.06, fill=green)
    d.rounded_rectangle(_s(68, 40, 82, 60), radius=SIZE * SS * 0.07, fill=green)
    d.rounded_rectangle(_s(54, 52, 82, 62), radius=SIZE * SS * 0.05, fill=green)
    for x in (45, 50, 55):
        d.line(_s(x, 16, x, 68), fill=dark, width=int(SS * 2))
    d.polygon(_s(30, 70, 70, 70, 64, 96, 36, 96), fill=(200, 100, 60))
    d.rectangle(_s(28, 68, 72, 76), fill=(215, 115, 70))
    d.ellipse(_s(46, 4, 54, 12), fill=(240, 90, 140))
    return _finish(img, background)


TEAL, CREAM, WHITE = (40, 130, 140), (250, 240, 190), (255, 255, 255)

# name -> (drawing, background, extra job fields)
EXAMPLES: dict[str, tuple[Callable[[Colour | None], Image.Image], Colour | None, dict]] = {
    "duck": (duck, None, {"priority": 5}),
    "mushroom": (mushroom, WHITE, {}),
    "star": (star, TEAL, {"output_format": "obj"}),
    "donut": (donut, None, {"params": {"resolution": 160}}),
    "gingerbread": (gingerbread, CREAM, {}),
    "cactus": (cactus, None, {}),
}


def main() -> None:
    pictures = HERE / "pictures"
    pictures.mkdir(exist_ok=True)
    for name, (draw, background, _) in EXAMPLES.items():
        draw(background).save(pictures / f"{name}.png", optimize=True)
    # the same subjects on other backgrounds, for the list and JSONL examples
    star(WHITE).save(pictures / "star_white.png", optimize=True)
    cactus(CREAM).save(pictures / "cactus_cream.png", optimize=True)

    for seed, (name, (_, _, extra)) in enumerate(EXAMPLES.items(), 1):
        if name in ("star", "cactus"):
            continue  # these two come in the list and JSONL files below
        job = {"name": name, "task": "mesh", "image": f"pictures/{name}.png", "seed": seed, **extra}
        (HERE / f"{name}.json").write_text(json.dumps(job, indent=2) + "\n")
    pair = [
        {"name": "star", "task": "mesh", "image": "pictures/star.png", "output_format": "obj"},
        {"name": "star-on-white", "task": "mesh", "image": "pictures/star_white.png"},
    ]
    (HERE / "stars.json").write_text(json.dumps(pair, indent=2) + "\n")
    lines = [
        {
            "name": "cactus",
            "task": "mesh",
            "image": "pictures/cactus.png",
            "params": {"depth": 1.2},
        },
        {"name": "cactus-on-cream", "task": "mesh", "image": "pictures/cactus_cream.png"},
    ]
    (HERE / "cacti.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
