"""Seconds per built-in mesh backend (texture, segment, rig, convert) by mesh size, on one core.

    python -m bench.backends [--repeat 3] [--json]

The mesh (``--mesh figure``, the default) is ``bench.figures``' T-posed figure with its limbs
blended in smoothly, meshed by marching cubes at about 5k, 22k and 100k faces: evenly
sized triangles, like a generative model's output. ``--mesh character`` is the same
figure as a boolean union of capsules (long sliver faces, sharp creases) at 5k,
subdivided to 20k and 82k: the harder case for parts and rig. Each cell is
the backend's own work on one job (what the runner calls "inference": the adapter's
run_batch on a batch of one), median of ``--repeat`` runs after one warm-up (one run at
the largest size). ``convert`` decimates to half the faces (``face_limit``); ``texture``
projects a 512 px drawing onto a 1024 px texture. Goals at 20k faces: texture under 2 s,
parts under 2 s, rig under 3 s.

One thread: the BLAS/OpenMP pools are pinned to one thread before numpy loads (an
explicit ``OMP_NUM_THREADS`` etc. in the environment wins), and the process to one CPU.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, before numpy/scipy load their pools

import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from adapters.base import Adapter, Item, Result  # noqa: E402
from bench import common, figures  # noqa: E402
from bench.inflate import character_png  # noqa: E402
from config import load_settings  # noqa: E402

BACKENDS = {  # task -> (model id, params given a mesh of n faces)
    "texture": ("builtin-project", lambda n: {"texture_size": 1024}),
    "segment": ("builtin-parts", lambda n: {}),
    "rig": ("builtin-rig", lambda n: {}),
    "convert": ("builtin-convert", lambda n: {"face_limit": n // 2}),
}


def _adapter(model_id: str) -> Adapter:
    from adapters.base import load_adapter

    spec = load_settings(env={}).registry.get(model_id)
    adapter = load_adapter(spec.adapter, spec.id, spec.options)
    adapter.load("cpu")
    return adapter


def _time(adapter: Adapter, item: Item, repeat: int) -> float:
    def once() -> float:
        t0 = time.perf_counter()
        (res,) = adapter.run_batch([item])
        elapsed = time.perf_counter() - t0
        if not isinstance(res, Result):
            raise RuntimeError(f"{adapter.model_id} failed: {res}") from res
        return elapsed

    once()  # warm-up: imports, caches
    return statistics.median(once() for _ in range(repeat))


def run(repeat: int, mesh: str = "figure") -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if mesh == "figure":
        sizes = [figures.smooth_figure(resolution=r) for r in (60, 120, 256)]
    else:
        base = figures.character()
        sizes = [base, base.subdivide(), base.subdivide().subdivide()]
    picture = character_png(512)
    rows = []
    for task, (model_id, params) in BACKENDS.items():
        adapter = _adapter(model_id)
        row: dict[str, Any] = {"backend": model_id, "task": task}
        for n, shape in enumerate(sizes):
            faces = len(shape.faces)
            item = Item(
                job_id=0,
                task=task,
                params=params(faces),
                mesh=shape.copy(),
                mesh_name="character.glb",
                images=[picture],
                image_names=["a.png"],
            )
            row[f"{faces // 1000}k_faces_s"] = round(
                _time(adapter, item, 1 if n == len(sizes) - 1 else repeat), 3
            )
        adapter.unload()
        rows.append(row)
    return {"mesh": mesh, "faces": [len(m.faces) for m in sizes], "repeat": repeat, "rows": rows}


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mesh", choices=("figure", "character"), default="figure")
    args = parser.parse_args()
    result = run(args.repeat, args.mesh)
    if args.json:
        common.emit(result, as_json=True)
        return
    cols = list(result["rows"][0])
    print(f"seconds per job on one core, {args.mesh} mesh (median of {args.repeat};"
          f" faces: {result['faces']})")  # fmt: skip
    print(" | ".join(f"{c:>15}" for c in cols))
    for row in result["rows"]:
        print(" | ".join(f"{row[c]!s:>15}" for c in cols))


if __name__ == "__main__":
    main()
