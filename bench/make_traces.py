"""Write the scheduler traces in bench/traces/ (seeded: the same files every time).

    python -m bench.make_traces

Model figures are of the order the projects' READMEs give (TRELLIS at least 16 GB,
Hunyuan3D-2 6 GB for shape and 16 GB with texture, UniRig at least 8 GB); load times
are tens of seconds, as reading the weights from disk is.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "traces"

# id, vram_mb, load_s, infer_s (one job), batch, batch_speedup
_SPECS = [
    ("trellis", 16000, 40.0, 25.0, 4, 1.6),
    ("hunyuan-shape", 6000, 20.0, 12.0, 4, 1.8),
    ("hunyuan-paint", 16000, 35.0, 30.0, 2, 1.3),
    ("partfield", 4000, 8.0, 3.0, 8, 2.5),
    ("holopart", 10000, 25.0, 20.0, 2, 1.4),
    ("unirig", 8000, 15.0, 10.0, 4, 2.0),
]
MODELS = [
    dict(zip(("id", "vram_mb", "load_s", "infer_s", "batch", "batch_speedup"), spec, strict=True))
    for spec in _SPECS
]


def burst(rng: random.Random) -> dict[str, Any]:
    """400 jobs over six models within five seconds, one 24 GB GPU."""
    weights = [0.25, 0.25, 0.1, 0.2, 0.1, 0.1]
    jobs = [
        {"t": round(rng.uniform(0, 5), 3), "model": rng.choices(MODELS, weights)[0]["id"]}
        for _ in range(400)
    ]
    return {"gpus": [{"id": 0, "vram_mb": 24576}], "models": MODELS, "jobs": _sorted(jobs)}


def stream(rng: random.Random) -> dict[str, Any]:
    """Two hours on two 48 GB GPUs (the six models need 60 GB together): steady arrivals
    at about 60 % of capacity, three bursts, and 5 % of jobs at priority 5."""
    weights = [0.3, 0.2, 0.1, 0.2, 0.08, 0.12]
    jobs: list[dict[str, Any]] = []
    t = 0.0
    while t < 7200:
        t += rng.expovariate(1 / 20.0)
        jobs.append(_job(rng, t, weights))
    for start in (1200.0, 3600.0, 5400.0):  # bursts: 60 jobs within a minute
        for _ in range(60):
            jobs.append(_job(rng, start + rng.uniform(0, 60), weights))
    return {"gpus": [{"id": 0, "vram_mb": 49152}, {"id": 1, "vram_mb": 49152}], "models": MODELS,
            "jobs": _sorted(jobs)}  # fmt: skip


def skewed(rng: random.Random) -> dict[str, Any]:
    """One 24 GB GPU kept busy by two popular models; a rare one (unirig) gets a job
    about every ten minutes and must not starve."""
    jobs: list[dict[str, Any]] = []
    t = 0.0
    while t < 5400:
        t += rng.expovariate(1 / 12.0)
        jobs.append({"t": round(t, 3), "model": rng.choice(["hunyuan-shape", "trellis"])})
    t = 0.0
    while True:
        t += rng.expovariate(1 / 600.0)
        if t >= 5400:
            break
        jobs.append({"t": round(t, 3), "model": "unirig"})
    return {"gpus": [{"id": 0, "vram_mb": 24576}], "models": MODELS, "jobs": _sorted(jobs)}


def _job(rng: random.Random, t: float, weights: list[float]) -> dict[str, Any]:
    job: dict[str, Any] = {"t": round(t, 3), "model": rng.choices(MODELS, weights)[0]["id"]}
    if rng.random() < 0.05:
        job["priority"] = 5
    return job


def _sorted(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(jobs, key=lambda j: j["t"])


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, make in (("burst", burst), ("stream", stream), ("skewed", skewed)):
        doc = make(random.Random(name))
        (OUT / f"{name}.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"{OUT / name}.json: {len(doc['jobs'])} jobs")


if __name__ == "__main__":
    main()
