"""Seconds of the builtin-inflate backend per picture size, on one core.

    python -m bench.inflate [--repeat 5] [--json]

For 256, 512 and 1024 px pictures of a drawn character (thin limbs, an off-centre head)
it times the backend itself (decode + mask + balloon solve + marching cubes + colours,
what the runner calls "inference") and the rest of a job's work (preview render and
GLB export), then the preview renderer alone on a 50k-face sphere that fills the frame
(its worst case: every pixel shaded). Median of ``--repeat`` runs after one warm-up.
Goals: 512 px under 1 s end to end; a 50k-face preview well under 1 s.

One thread: the BLAS/OpenMP pools are pinned to one thread before numpy loads (an
explicit ``OMP_NUM_THREADS`` etc. in the environment wins).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, before numpy/scipy load their pools

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import trimesh  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from adapters.base import Item, Result  # noqa: E402
from adapters.builtin.inflate import InflateAdapter  # noqa: E402
from geometry.render import render  # noqa: E402
from storage.mesh_export import export_mesh  # noqa: E402


def character_png(size: int) -> bytes:
    """The same drawing at any size, so the sizes compare."""
    s = size / 200
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse([85 * s, 10 * s, 125 * s, 50 * s], fill=(230, 180, 140, 255))
    d.rounded_rectangle([80 * s, 50 * s, 125 * s, 120 * s], radius=12 * s, fill=(60, 90, 200, 255))
    for (x0, y0), (x1, y1), w in (
        ((85, 60), (40, 20), 14), ((120, 60), (170, 90), 14),
        ((90, 115), (70, 185), 16), ((115, 115), (135, 185), 16),
    ):  # fmt: skip
        d.line([(x0 * s, y0 * s), (x1 * s, y1 * s)], fill=(60, 60, 70, 255), width=round(w * s))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _median_s(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    out = fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def preview_50k(repeat: int) -> dict[str, Any]:
    sphere = trimesh.creation.uv_sphere(count=[113, 113])  # ~50k faces
    _ = sphere.vertex_normals  # computed once, as a loaded mesh would have them
    seconds, _ = _median_s(lambda: render(sphere), repeat)
    return {"faces": len(sphere.faces), "size_px": 512, "preview_s": round(seconds, 3)}


def run(repeat: int) -> list[dict[str, Any]]:
    adapter = InflateAdapter("builtin-inflate")
    adapter.load("cpu")
    rows = []
    for size in (256, 512, 1024):
        item = Item(job_id=0, task="mesh", params={}, images=[character_png(size)])

        def infer(item: Item = item) -> Result:
            (res,) = adapter.run_batch([item])
            if not isinstance(res, Result):
                raise res
            return res

        infer_s, res = _median_s(infer, repeat)
        preview_s, _ = _median_s(lambda res=res: render(res.mesh), repeat)
        export_s, glb = _median_s(lambda res=res: export_mesh(res.mesh, "glb")["mesh.glb"], repeat)
        rows.append(
            {
                "picture_px": size,
                "inflate_s": round(infer_s, 3),
                "preview_s": round(preview_s, 3),
                "glb_export_s": round(export_s, 3),
                "job_total_s": round(infer_s + preview_s + export_s, 3),
                "faces": len(res.mesh.faces),
                "vertices": len(res.mesh.vertices),
                "glb_bytes": len(glb),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    rows = run(args.repeat)
    sphere = preview_50k(args.repeat)
    if args.json:
        doc = {"threads": 1, "repeat": args.repeat, "results": rows, "preview_50k_faces": sphere}
        print(json.dumps(doc, indent=2))
        return
    cols = list(rows[0])
    print(f"builtin-inflate, one thread, median of {args.repeat} (default params)")
    print("  ".join(f"{c:>12}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>12}" for c in cols))
    print(
        f"preview alone, {sphere['faces']} faces filling a {sphere['size_px']} px frame:"
        f" {sphere['preview_s']} s"
    )


if __name__ == "__main__":
    main()
