"""The T-posed figure that tests and benchmarks build their meshes from, in the glTF
frame of DESIGN.md (+Y up, front to +Z, centred at the origin, longest side 1).

Two ways: ``character`` unions capsules (sharp creases, long sliver faces, as boolean
modelling and CAD leave them) and ``smooth_figure`` blends them and meshes the result by
marching cubes (evenly sized triangles, like a generative model's output). Here rather
than in ``tests/`` so that ``bench/`` need not import the tests.
"""

from __future__ import annotations

import numpy as np
import trimesh
from trimesh.creation import capsule, icosphere


def _capsule(a: tuple[float, float, float], b: tuple[float, float, float], r: float,
             *, count: tuple[int, int] = (24, 24)) -> trimesh.Trimesh:  # fmt: skip
    """A capsule of radius ``r`` whose axis runs from ``a`` to ``b``."""
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    axis = b_ - a_
    cap = capsule(height=float(np.linalg.norm(axis)), radius=r, count=count)
    cap.apply_transform(trimesh.geometry.align_vectors([0, 0, 1], axis / np.linalg.norm(axis)))
    cap.apply_translation((a_ + b_) / 2 - cap.bounding_box.centroid)
    return cap


def normalised(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """``mesh`` moved and scaled in place: centred at the origin, longest side 1."""
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    mesh.apply_scale(1.0 / float(np.max(mesh.extents)))
    return mesh


def union(parts: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """The primitives joined into one watertight shell (manifold3d), normalised."""
    out = trimesh.boolean.union(parts, engine="manifold")
    assert out.is_watertight and out.is_volume, "the primitives must union into one shell"
    return normalised(out)


def character() -> trimesh.Trimesh:
    """A T-posed figure: a torso, a head, two arms straight out, two legs."""
    return union(
        [
            _capsule((0, 0.95, 0), (0, 1.45, 0), 0.17),  # torso
            icosphere(subdivisions=3, radius=0.14).apply_translation((0, 1.75, 0)),  # head
            _capsule((0, 1.55, 0), (0, 1.65, 0), 0.06),  # neck
            _capsule((0.12, 1.45, 0), (0.85, 1.45, 0), 0.055),  # left arm (+X)
            _capsule((-0.12, 1.45, 0), (-0.85, 1.45, 0), 0.055),  # right arm
            _capsule((0.09, 0.95, 0), (0.12, 0.08, 0), 0.07),  # left leg
            _capsule((-0.09, 0.95, 0), (-0.12, 0.08, 0), 0.07),  # right leg
        ]
    )


def _capsule_distance(
    p: np.ndarray, a: tuple[float, ...], b: tuple[float, ...], r: float
) -> np.ndarray:
    """Signed distance from points ``p`` (..., 3) to the capsule from ``a`` to ``b``."""
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    ab = b_ - a_
    h = np.clip((p - a_) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - a_ - h[..., None] * ab, axis=-1) - r


def smooth_figure(blend: float = 0.08, resolution: int = 120) -> trimesh.Trimesh:
    """The figure of ``character`` with its limbs blended in smoothly (a smooth minimum
    of capsule distances, ``blend`` wide), meshed by marching cubes: no sharp creases
    and evenly sized triangles, like the output of a generative model."""
    from skimage.measure import marching_cubes

    axes = [
        np.linspace(-1.0, 1.0, resolution),
        np.linspace(-0.1, 2.0, resolution),
        np.linspace(-0.35, 0.35, resolution // 3),
    ]
    p = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    limbs = [
        ((0, 1.75, 0.02), (0, 1.78, 0.02), 0.14),  # head
        ((0.15, 1.45, 0), (0.85, 1.45, 0), 0.055),  # left arm (+X)
        ((-0.15, 1.45, 0), (-0.85, 1.45, 0), 0.055),  # right arm
        ((0.09, 0.9, 0), (0.12, 0.08, 0), 0.075),  # left leg
        ((-0.09, 0.9, 0), (-0.12, 0.08, 0), 0.075),  # right leg
    ]
    d = _capsule_distance(p, (0, 0.95, 0), (0, 1.4, 0), 0.19)  # torso
    for a, b, r in limbs:
        e = _capsule_distance(p, a, b, r)
        h = np.clip(0.5 + 0.5 * (e - d) / blend, 0.0, 1.0)
        d = e * (1 - h) + d * h - blend * h * (1 - h)
    spacing = tuple(float(ax[1] - ax[0]) for ax in axes)
    verts, faces, _, _ = marching_cubes(d, 0.0, spacing=spacing)
    mesh = trimesh.Trimesh(verts, faces[:, ::-1])
    if mesh.volume < 0:
        mesh.invert()
    return normalised(mesh)
