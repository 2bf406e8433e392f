"""Measured model costs: what each load and batch took, and the planner's summary."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select

from db.clock import now_expr
from db.models import model_loads


@dataclass(frozen=True)
class MeasuredCost:
    model: str
    load_s: float | None  # median of the recent loads
    peak_vram_mb: float | None  # the highest recent peak, loads and batches
    infer_s_per_job: float | None  # median of recent batches' seconds per job
    loads: int
    batches: int


def record(
    conn: Connection,
    *,
    model: str,
    runner: str | None,
    device: str | None,
    kind: str,
    seconds: float,
    batch_size: int | None = None,
    peak_vram_mb: float | None = None,
) -> None:
    conn.execute(
        insert(model_loads).values(
            model=model, runner=runner, device=device, kind=kind, seconds=seconds,
            batch_size=batch_size, peak_vram_mb=peak_vram_mb, at=now_expr(conn),
        )
    )  # fmt: skip


def measured(conn: Connection, *, recent: int = 20) -> dict[str, MeasuredCost]:
    """Per model, from its ``recent`` latest loads and latest batches (a window
    function picks them: the table grows by a row per batch)."""
    rank = (
        func.row_number()
        .over(
            partition_by=(model_loads.c.model, model_loads.c.kind), order_by=model_loads.c.id.desc()
        )
        .label("rank")
    )
    latest = select(
        model_loads.c.model, model_loads.c.kind, model_loads.c.seconds,
        model_loads.c.batch_size, model_loads.c.peak_vram_mb, rank,
    ).subquery()  # fmt: skip
    rows = conn.execute(select(latest).where(latest.c.rank <= recent)).all()
    loads: dict[str, list[tuple[float, float | None]]] = {}
    batches: dict[str, list[tuple[float, float | None]]] = {}
    for r in rows:
        into = loads if r.kind == "load" else batches
        per = r.seconds if r.kind == "load" else r.seconds / max(r.batch_size or 1, 1)
        into.setdefault(r.model, []).append((per, r.peak_vram_mb))
    out = {}
    for model in sorted(set(loads) | set(batches)):
        lo, ba = loads.get(model, []), batches.get(model, [])
        peaks = [p for _, p in lo + ba if p is not None]
        out[model] = MeasuredCost(
            model=model,
            load_s=statistics.median(s for s, _ in lo) if lo else None,
            peak_vram_mb=max(peaks) if peaks else None,
            infer_s_per_job=statistics.median(s for s, _ in ba) if ba else None,
            loads=len(lo),
            batches=len(ba),
        )
    return out
