"""The VRAM planner: which model a free device runs next, and what it evicts to fit it.

Pure: a snapshot in, a decision out, no clock, database or GPU. The runner calls it
with the queue's demand and its devices; ``bench/scheduler.py`` calls the very same
function on a virtual clock to replay traces.

Policy, in order:

1. Only models that fit the device at all, with runnable jobs, are candidates. A model
   resident on another device that is free, or will be before a load here would end,
   is left to that device; one running on another device, or held by another runner,
   is taken here only when its queue is deep (at least two full batches), so two
   devices do not both pay a load to drain one short queue.
2. Aging: models whose oldest job has waited ``max_wait_s`` or more go first, whatever
   their priority, so no job starves behind popular models or higher priorities. Among
   them the score below decides, so a backlog in which everything is overdue still
   drains model by model instead of thrashing.
3. Priorities: otherwise only models whose most urgent job has the highest priority
   present compete.
4. Among those, the model with the best score: jobs served, weighted by how long they
   have waited, per second of device time the choice costs. The cost is the batch's
   run time, plus the load when the model is not resident here, plus the reloads
   its evictions will cause later (an evicted model with queued work must come
   back). A resident model therefore keeps the device while it has work, until the
   waiting of others outweighs a load.
5. Eviction, when the model must be loaded and does not fit beside the residents:
   residents with no queued work first (least recently used first), then the one
   whose reload is cheapest against its demand. A model that is running is never
   evicted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Added to every job's wait in the score, so fresh jobs still count (a burst's jobs all
# have waited ~0 s); about the length of one model load.
WAIT_OFFSET_S = 60.0


@dataclass(frozen=True)
class Demand:
    """Runnable queued work of one model."""

    model: str
    ready: int
    top_priority: int
    oldest_wait_s: float


@dataclass(frozen=True)
class Cost:
    """What a model costs on a device: memory to admit it, load time, batch speed."""

    model: str
    vram_mb: float
    load_s: float
    batch: int = 1
    infer_s: float = 1.0  # one job on its own
    batch_speedup: float = 1.0  # a full batch runs this much faster than one by one

    def batch_s(self, k: int) -> float:
        """Seconds for a batch of ``k`` jobs (DESIGN.md's formula)."""
        if k <= 0:
            return 0.0
        if self.batch <= 1:
            return self.infer_s * k
        return self.infer_s * k / (1 + (self.batch_speedup - 1) * (k - 1) / (self.batch - 1))


@dataclass(frozen=True)
class Resident:
    model: str
    vram_mb: float
    last_used: float
    running: bool = False


@dataclass(frozen=True)
class DeviceState:
    id: int
    capacity_mb: float  # what models may use: total minus the reserve
    residents: tuple[Resident, ...] = ()
    busy: bool = False  # loading or running a batch
    free_in_s: float = 0.0  # when busy: about how long until it is free

    def resident(self, model: str) -> Resident | None:
        return next((r for r in self.residents if r.model == model), None)

    @property
    def used_mb(self) -> float:
        return sum(r.vram_mb for r in self.residents)

    @property
    def running(self) -> str | None:
        return next((r.model for r in self.residents if r.running), None)


@dataclass(frozen=True)
class Decision:
    device: int
    model: str
    take: int  # jobs to claim
    load: bool  # the model must be loaded first
    evict: tuple[str, ...] = ()  # unload these first, in this order
    reason: str = ""


def plan(
    device_id: int,
    devices: Iterable[DeviceState],
    demand: Iterable[Demand],
    costs: Mapping[str, Cost],
    *,
    max_wait_s: float,
    held_elsewhere: Iterable[str] = (),
) -> Decision | None:
    """What the free device ``device_id`` should do next; None: nothing for it.

    ``devices``: every device this planner sees (the one deciding included).
    ``held_elsewhere``: models resident in other runners, which can drain them.
    Models without a ``Cost`` are not planned (the caller fails their jobs).
    """
    devs = {d.id: d for d in devices}
    dev = devs[device_id]
    others = [d for d in devs.values() if d.id != device_id]
    others_held = set(held_elsewhere)
    work = {d.model: d for d in demand if d.ready > 0 and d.model in costs}

    def deep(d: Demand) -> bool:
        return d.ready >= 2 * max(costs[d.model].batch, 1)

    candidates: list[Demand] = []
    for d in work.values():
        cost = costs[d.model]
        here = dev.resident(d.model) is not None
        if not here and cost.vram_mb > dev.capacity_mb - _pinned_mb(dev):
            continue  # cannot fit even after evicting everything evictable
        if not here:
            soon = cost.load_s + cost.batch_s(min(d.ready, max(cost.batch, 1)))
            holders = [o for o in others if o.resident(d.model)]
            if any(not o.busy or o.free_in_s <= soon for o in holders) and not deep(d):
                continue  # a device that holds it is free, or free sooner than a load here
            elsewhere = any(o.running == d.model for o in others) or d.model in others_held
            overdue = d.oldest_wait_s >= max_wait_s
            if elsewhere and not deep(d) and not (overdue and d.model in others_held):
                continue
        candidates.append(d)
    if not candidates:
        return None

    starving = [d for d in candidates if d.oldest_wait_s >= max_wait_s]
    if starving:  # overdue work first; among it, the usual score (no thrashing)
        contenders, reason = starving, "aging"
    else:
        top = max(d.top_priority for d in candidates)
        contenders = [d for d in candidates if d.top_priority == top]
        reason = "priority" if top > 0 else "score"
    scored = [(_score(dev, d, work, costs), d) for d in contenders]
    best = max(scored, key=lambda s: (s[0], s[1].oldest_wait_s, s[1].model))[1]
    return _decide(dev, best, work, costs, reason=reason)


def _pinned_mb(dev: DeviceState) -> float:
    return sum(r.vram_mb for r in dev.residents if r.running)


def _score(
    dev: DeviceState, d: Demand, work: Mapping[str, Demand], costs: Mapping[str, Cost]
) -> float:
    cost = costs[d.model]
    take = min(d.ready, max(cost.batch, 1))
    seconds = cost.batch_s(take)
    if dev.resident(d.model) is None:
        seconds += cost.load_s
        for name in _evictions(dev, cost, work, costs):
            if name in work:  # it has queued work: it will have to come back
                seconds += costs[name].load_s if name in costs else 0.0
    return take * (d.oldest_wait_s + WAIT_OFFSET_S) / max(seconds, 1e-9)


def _evictions(
    dev: DeviceState, cost: Cost, work: Mapping[str, Demand], costs: Mapping[str, Cost]
) -> tuple[str, ...]:
    """Residents to unload so that ``cost`` fits, in order; never a running one."""
    free = dev.capacity_mb - dev.used_mb
    if cost.vram_mb <= free:
        return ()

    def order(r: Resident) -> tuple[int, float, float]:
        d = work.get(r.model)
        c = costs.get(r.model)
        if d is None or c is None:
            return (0, 0.0, r.last_used)  # no queued work: least recently used first
        # With queued work: the cheapest reload against the work waiting for it.
        return (1, c.load_s * min(d.ready, max(c.batch, 1)), r.last_used)

    out: list[str] = []
    for r in sorted((r for r in dev.residents if not r.running), key=order):
        if cost.vram_mb <= free:
            break
        out.append(r.model)
        free += r.vram_mb
    return tuple(out)


def _decide(
    dev: DeviceState,
    d: Demand,
    work: Mapping[str, Demand],
    costs: Mapping[str, Cost],
    *,
    reason: str,
) -> Decision:
    cost = costs[d.model]
    take = min(d.ready, max(cost.batch, 1))
    if dev.resident(d.model) is not None:
        return Decision(dev.id, d.model, take, load=False, reason=reason)
    evict = _evictions(dev, cost, work, costs)
    return Decision(dev.id, d.model, take, load=True, evict=evict, reason=reason)


def lower_bound_loads(models: Iterable[str]) -> int:
    """Every model with work is loaded at least once."""
    return len(set(models))


def full_batches_s(cost: Cost, jobs: int) -> float:
    """Device seconds for ``jobs`` jobs run in full batches (the last one as a fraction)."""
    per_job = cost.batch_s(max(cost.batch, 1)) / max(cost.batch, 1)
    return per_job * jobs if jobs > 0 else 0.0
