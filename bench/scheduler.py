"""Replay a job trace through a scheduling policy on a virtual clock.

    python -m bench.scheduler --trace bench/traces/burst.json --policy planner --json
    python -m bench.scheduler --all          # every trace under bench/traces, every policy

Policies (DESIGN.md defines the baselines exactly):

- ``fifo``: a device that comes free takes the oldest arrived job (ties in trace order)
  and up to ``batch`` queued jobs of its model in arrival order; if that model is not
  on this device, it unloads everything there and loads it.
- ``lru``: the same choice of jobs, but models stay resident; the least recently used
  model on that device is unloaded until the new one fits.
- ``planner``: ``runner.planner.plan``, the code the runner uses; its batches take the
  model's most urgent jobs first (priority, then arrival), as the runner's claim does.

A batch of k jobs takes ``infer_s * k / (1 + (batch_speedup - 1) * (k - 1) / (batch - 1))``
seconds, a load ``load_s``, an unload nothing. A job's wait runs from its arrival to
the start of the batch that runs it (after any load).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.percentiles import percentile
from runner.planner import (
    Cost,
    Demand,
    DeviceState,
    Resident,
    full_batches_s,
    plan,
)

POLICIES = ("fifo", "lru", "planner")
# The aging bound of a trace that names none. The simulation's own parameter, part of the
# trace format: a trace replays the same whatever anyone's settings say, so its figures
# compare across runs (the runner's bound is the configured runner.max_wait_s).
TRACE_MAX_WAIT_S = 600.0
TRACES = Path(__file__).resolve().parent / "traces"


@dataclass
class Job:
    index: int
    t: float
    model: str
    priority: int = 0
    start: float | None = None


@dataclass
class Gpu:
    id: int
    vram_mb: float
    residents: dict[str, float] = field(default_factory=dict)  # model -> last used
    free_at: float = 0.0
    running: str | None = None


@dataclass
class Trace:
    gpus: list[dict[str, Any]]
    costs: dict[str, Cost]
    jobs: list[Job]
    max_wait_s: float = TRACE_MAX_WAIT_S

    @classmethod
    def load(cls, path: Path) -> Trace:
        doc = json.loads(path.read_text())
        costs = {
            m["id"]: Cost(
                model=m["id"], vram_mb=float(m["vram_mb"]), load_s=float(m["load_s"]),
                batch=int(m.get("batch", 1)), infer_s=float(m["infer_s"]),
                batch_speedup=float(m.get("batch_speedup", 1.0)),
            )
            for m in doc["models"]
        }  # fmt: skip
        jobs = [
            Job(i, float(j["t"]), j["model"], int(j.get("priority", 0)))
            for i, j in enumerate(doc["jobs"])
        ]
        return cls(doc["gpus"], costs, jobs, float(doc.get("max_wait_s", TRACE_MAX_WAIT_S)))


def simulate(trace: Trace, policy: str) -> dict[str, Any]:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
    gpus = [Gpu(int(g["id"]), float(g["vram_mb"])) for g in trace.gpus]
    for job in trace.jobs:
        if trace.costs[job.model].vram_mb > max(g.vram_mb for g in gpus):
            raise ValueError(f"model {job.model} fits on no device")
    arrivals = sorted(trace.jobs, key=lambda j: (j.t, j.index))
    queue: dict[str, list[Job]] = {}  # model -> its queued jobs
    nxt = 0  # next arrival
    now = 0.0
    loads = 0
    load_s_total = 0.0
    busy_s = 0.0
    done = 0
    finish = 0.0

    while done < len(trace.jobs):
        while nxt < len(arrivals) and arrivals[nxt].t <= now:
            job = arrivals[nxt]
            queue.setdefault(job.model, []).append(job)
            nxt += 1
        for g in gpus:
            if g.free_at <= now:
                g.running = None
        progressed = False
        for g in sorted(gpus, key=lambda g: g.id):
            if g.free_at > now or not any(queue.values()):
                continue
            choice = _choose(policy, g, gpus, queue, trace, now)
            if choice is None:
                continue
            model, evict, take = choice
            cost = trace.costs[model]
            for name in evict:
                del g.residents[name]
            t = now
            if model not in g.residents:
                for name in _fit(policy, g, cost, trace):
                    del g.residents[name]
                loads += 1
                load_s_total += cost.load_s
                t += cost.load_s
            batch = _take(policy, queue, model, take)
            for job in batch:
                job.start = t
            run = cost.batch_s(len(batch))
            g.free_at = t + run
            g.running = model
            g.residents[model] = g.free_at
            busy_s += g.free_at - now
            done += len(batch)
            finish = max(finish, g.free_at)
            progressed = True
        if done >= len(trace.jobs):
            break
        upcoming = [g.free_at for g in gpus if g.free_at > now]
        if nxt < len(arrivals):
            upcoming.append(arrivals[nxt].t)
        if not upcoming:
            if not progressed:
                raise RuntimeError(f"{policy}: stuck at t={now} with jobs queued and devices idle")
            continue
        now = min(upcoming)

    waits = sorted(j.start - j.t for j in trace.jobs if j.start is not None)
    start = min(j.t for j in trace.jobs)
    makespan = finish - start
    return {
        "policy": policy,
        "jobs_done": done,
        "loads": loads,
        "load_s_total": round(load_s_total, 1),
        "busy_s": round(busy_s, 1),
        "makespan_s": round(makespan, 1),
        "load_share": round(load_s_total / (makespan * len(gpus)), 4) if makespan else 0.0,
        "wait_p50_s": round(percentile(waits, 0.50), 1),
        "wait_p95_s": round(percentile(waits, 0.95), 1),
        "wait_max_s": round(waits[-1], 1),
        "lower_bound_makespan_s": round(lower_bound_makespan(trace), 1),
        "lower_bound_loads": len({j.model for j in trace.jobs}),
        "aging_bound_s": round(aging_bound(trace), 1),
    }


def aging_bound(trace: Trace) -> float:
    """The longest wait the planner promises: the aging bound, plus one load and one
    full batch (the device may be mid-batch when a job turns overdue)."""
    costs = [trace.costs[m] for m in {j.model for j in trace.jobs}]
    return (
        trace.max_wait_s
        + max(c.load_s for c in costs)
        + max(c.batch_s(max(c.batch, 1)) for c in costs)
    )


def lower_bound_makespan(trace: Trace) -> float:
    """One load per model plus all its jobs in full batches, spread over the devices;
    and never before the last arrival's own job could finish."""
    per_model: dict[str, int] = {}
    for j in trace.jobs:
        per_model[j.model] = per_model.get(j.model, 0) + 1
    work = sum(
        trace.costs[m].load_s + full_batches_s(trace.costs[m], n) for m, n in per_model.items()
    )
    first = min(j.t for j in trace.jobs)
    last = max(trace.jobs, key=lambda j: j.t)
    tail = last.t + trace.costs[last.model].batch_s(1) - first
    return max(work / len(trace.gpus), tail)


def _choose(
    policy: str, g: Gpu, gpus: list[Gpu], queue: dict[str, list[Job]], trace: Trace, now: float
) -> tuple[str, tuple[str, ...], int] | None:
    if policy in ("fifo", "lru"):
        oldest = min((q[0] for q in queue.values() if q), key=lambda j: (j.t, j.index))
        model = oldest.model
        evict: tuple[str, ...] = ()
        if policy == "fifo" and model not in g.residents:
            evict = tuple(g.residents)
        return model, evict, trace.costs[model].batch
    demand = [
        Demand(m, len(q), max(j.priority for j in q), now - min(j.t for j in q))
        for m, q in queue.items()
        if q
    ]
    devices = [_state(x, trace, now) for x in gpus]
    decision = plan(g.id, devices, demand, trace.costs, max_wait_s=trace.max_wait_s)
    if decision is None:
        return None
    return decision.model, decision.evict, decision.take


def _state(g: Gpu, trace: Trace, now: float) -> DeviceState:
    residents = tuple(
        Resident(m, trace.costs[m].vram_mb, last, running=(m == g.running))
        for m, last in g.residents.items()
    )
    busy = g.running is not None and g.free_at > now
    return DeviceState(g.id, g.vram_mb, residents, busy=busy, free_in_s=max(g.free_at - now, 0.0))


def _fit(policy: str, g: Gpu, cost: Cost, trace: Trace) -> list[str]:
    """LRU unloads until ``cost`` fits (fifo has emptied the device already; the
    planner's evictions were applied, so this only catches a planner mistake)."""
    used = sum(trace.costs[m].vram_mb for m in g.residents)
    out: list[str] = []
    for name, _ in sorted(g.residents.items(), key=lambda kv: kv[1]):
        if used + cost.vram_mb <= g.vram_mb:
            break
        if policy == "planner":
            raise RuntimeError(f"planner over-committed device {g.id} loading {cost.model}")
        out.append(name)
        used -= trace.costs[name].vram_mb
    return out


def _take(policy: str, queue: dict[str, list[Job]], model: str, take: int) -> list[Job]:
    jobs = queue[model]
    if policy == "planner":  # the runner's claim order: most urgent first
        jobs.sort(key=lambda j: (-j.priority, j.t, j.index))
    batch, queue[model] = jobs[:take], jobs[take:]
    return batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", type=Path, action="append", help="a trace file (repeatable)")
    parser.add_argument("--policy", choices=POLICIES, action="append")
    parser.add_argument("--all", action="store_true", help="every trace in bench/traces")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    traces = args.trace or (sorted(TRACES.glob("*.json")) if args.all else [])
    if not traces:
        parser.error("give --trace FILE or --all")
    policies = args.policy or list(POLICIES)
    results = []
    for path in traces:
        trace = Trace.load(path)
        for policy in policies:
            results.append({"trace": path.stem, **simulate(trace, policy)})
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return
    cols = ["trace", "policy", "loads", "lower_bound_loads", "load_share", "makespan_s",
            "lower_bound_makespan_s", "wait_p50_s", "wait_p95_s", "wait_max_s", "aging_bound_s",
            "jobs_done"]  # fmt: skip
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
