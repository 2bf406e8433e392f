"""builtin-rig's preview: the mesh tinted by its weights, with the bones drawn over it."""

from __future__ import annotations

import numpy as np

from adapters.builtin.rig.pipeline import Rig
from adapters.builtin.rig.skeleton import Skeleton
from geometry.camera import camera, framing, to_screen
from geometry.palette import PALETTE
from geometry.render import render

CHAIN_COLOURS = PALETTE.astype(np.float64)


def joint_colours(skel: Skeleton) -> np.ndarray:
    """(J, 3) 0-255: one hue per chain, alternating lighter and darker along it."""
    out = np.tile(np.array([120.0, 120.0, 125.0]), (len(skel.names), 1))
    for c, (_, ids) in enumerate(skel.chains):
        for step, j in enumerate(ids):
            out[j] = CHAIN_COLOURS[c % len(CHAIN_COLOURS)] * (1.0 if step % 2 == 0 else 0.55)
    return out


def bone_preview(
    vertices: np.ndarray,
    faces: np.ndarray,
    skin: Rig,
    *,
    size: int = 512,
    view: str = "three_quarter",
) -> np.ndarray:
    """The mesh coloured by its weights (each joint's bone colour, blended) with the
    bones drawn over it, always visible, in the framing of ``geometry.render.render``.

    The colour a vertex shows is that of the joints it follows: a weight bleeding into
    the wrong limb shows as a patch of that limb's colour.
    """
    import trimesh
    from PIL import Image, ImageDraw

    skel = skin.skeleton
    colours = joint_colours(skel)
    blend = np.einsum("nk,nkc->nc", skin.weights.astype(np.float64), colours[skin.joint_index])
    tint = 0.6 * blend + 0.4 * 235.0
    shown = trimesh.Trimesh(
        vertices, faces, vertex_colors=np.clip(tint, 0, 255).astype(np.uint8), process=False
    )
    rgb = render(shown, size=size, view=view)

    # render()'s projection: orthographic along camera(view), framed by the vertices.
    rot = camera(view)
    centre, scale = framing((np.asarray(vertices, np.float64) @ rot.T)[:, :2], size)
    xy = to_screen(skel.positions @ rot.T, centre, scale, (size / 2, size / 2))

    k = 4  # drawn k times larger and shrunk: smooth lines
    overlay = Image.new("RGBA", (size * k, size * k), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    p = xy * k
    line, dot = max(2, size // 170) * k, max(3, size // 110) * k
    for child in range(1, len(p)):
        a, b = tuple(p[skel.parents[child]]), tuple(p[child])
        draw.line([a, b], fill=(30, 30, 35, 255), width=line + 2 * k)
    for child in range(1, len(p)):
        a, b = tuple(p[skel.parents[child]]), tuple(p[child])
        c = colours[skel.parents[child]] if skel.parents[child] else colours[child]
        draw.line([a, b], fill=(*(int(x) for x in c), 255), width=line)
    for i, (x, y) in enumerate(p):
        r = dot * (1.5 if i == 0 else 1.0)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255, 255),
                     outline=(30, 30, 35, 255), width=k)  # fmt: skip
    overlay = overlay.resize((size, size), Image.Resampling.BOX)
    base = Image.fromarray(rgb).convert("RGBA")
    return np.asarray(Image.alpha_composite(base, overlay).convert("RGB"))
