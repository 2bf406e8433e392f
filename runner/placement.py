"""The runner's devices, what is loaded on them, and the planner's view of both.

A runner has one CPU slot (for ``device: cpu`` models; no memory limit is planned
there) and one slot per GPU of its inventory. ``choose`` turns the queue's demand and
the models' costs (measured where the runner has measured them, declared otherwise)
into ``runner.planner`` snapshots, one per slot, and returns the first decision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from config.registry import ModelSpec
from db.queue import ModelDemand
from runner.planner import Cost, Decision, Demand, DeviceState, Resident, plan

CPU_SLOT = -1
HEADROOM = 1.1  # measured peak x 1.1: a later batch may run a little larger


@dataclass
class Loaded:
    adapter: Any  # adapters.base.Adapter
    vram_mb: float
    last_used: float


@dataclass
class Slot:
    id: int  # the planner's device id; CPU_SLOT for the CPU
    device: str  # what adapters load onto: "cpu" or "cuda:N"
    capacity_mb: float  # what models may use here
    residents: dict[str, Loaded] = field(default_factory=dict)
    last_run: float = -math.inf

    @property
    def is_gpu(self) -> bool:
        return self.id != CPU_SLOT

    def serves(self, spec: ModelSpec) -> bool:
        return (spec.device != "cpu") == self.is_gpu

    def state(self) -> DeviceState:
        residents = tuple(
            Resident(m, loaded.vram_mb, loaded.last_used) for m, loaded in self.residents.items()
        )
        return DeviceState(self.id, self.capacity_mb, residents)


def make_slots(gpus: Iterable[Any], reserve_mb: float) -> list[Slot]:
    """The CPU slot and one per GPU (``runner.gpus.Device``), each GPU's capacity being
    the memory the driver reported free at start-up less ``reserve_mb`` (the CUDA
    context, about 0.6 GiB per process, and fragmentation)."""
    slots = [Slot(CPU_SLOT, "cpu", math.inf)]
    for gpu in gpus:
        slots.append(Slot(int(gpu.id), f"cuda:{gpu.id}", max(float(gpu.free_mb) - reserve_mb, 0.0)))
    return slots


def cost_of(spec: ModelSpec, measured: Any | None) -> Cost:
    """The planner's cost of ``spec``: measured figures once there are any (Ollama moved
    to measured memory after its estimates missed by 2.2x), the registry's otherwise."""
    vram = float(spec.vram_mb) if spec.device != "cpu" else 0.0
    load_s, infer_s = spec.load_s, spec.infer_s
    if measured is not None:
        if measured.peak_vram_mb and spec.device != "cpu":
            vram = measured.peak_vram_mb * HEADROOM
        if measured.load_s is not None:
            load_s = measured.load_s
        if measured.infer_s_per_job is not None:
            infer_s = measured.infer_s_per_job
    return Cost(spec.id, vram, load_s, max(spec.max_batch, 1), infer_s, spec.batch_speedup)


def demand_for_planner(demand: Iterable[ModelDemand], clock: datetime) -> list[Demand]:
    return [
        Demand(
            d.model,
            d.ready,
            d.top_priority,
            max((clock - d.oldest_created_at).total_seconds(), 0.0),
        )
        for d in demand
    ]


def choose(
    slots: list[Slot],
    demand: list[Demand],
    specs: Mapping[str, ModelSpec],
    costs: Mapping[str, Cost],
    *,
    max_wait_s: float,
    held_elsewhere: Iterable[str] = (),
) -> tuple[Slot, Decision] | None:
    """The next batch: which slot, which model, what to evict. Slots are asked in the
    order they last ran (the longest idle first), so CPU and GPU work interleave."""
    held = set(held_elsewhere)
    for slot in sorted(slots, key=lambda s: s.last_run):
        mine = [d for d in demand if d.model in specs and slot.serves(specs[d.model])]
        if not mine:
            continue
        peers = [s.state() for s in slots if s.is_gpu == slot.is_gpu]
        decision = plan(
            slot.id,
            peers,
            mine,
            costs,
            max_wait_s=max_wait_s,
            held_elsewhere=held - set(slot.residents),
        )
        if decision is not None:
            return slot, decision
    return None


def unplaceable(
    slots: list[Slot], specs: Mapping[str, ModelSpec], costs: Mapping[str, Cost]
) -> dict[str, str]:
    """Models this runner can never run, with the reason (another runner may)."""
    out = {}
    gpu_room = max((s.capacity_mb for s in slots if s.is_gpu), default=None)
    for model_id, spec in specs.items():
        if spec.device == "cpu":
            continue
        if gpu_room is None:
            out[model_id] = "this runner has no GPU"
        elif costs[model_id].vram_mb > gpu_room:
            out[model_id] = (
                f"needs {costs[model_id].vram_mb:,.0f} MiB; the largest GPU here has "
                f"{gpu_room:,.0f} MiB free for models"
            )
    return out
