"""From the registry and the measured costs to the planner's snapshot, and back."""

from __future__ import annotations

import math

from config.registry import ModelSpec
from db.costs import MeasuredCost
from runner import placement
from runner.gpus import Device
from runner.planner import Demand


def _spec(model_id: str, device: str = "cuda", vram: int = 8_000) -> ModelSpec:
    return ModelSpec(id=model_id, adapter="x:Y", tasks=["mesh"], device=device, vram_mb=vram,
                     load_s=30.0, max_batch=4, infer_s=5.0)  # fmt: skip


def test_measured_costs_replace_the_declared_ones() -> None:
    spec = _spec("m", vram=8_000)
    declared = placement.cost_of(spec, None)
    assert (declared.vram_mb, declared.load_s, declared.infer_s) == (8_000, 30.0, 5.0)
    seen = MeasuredCost(
        "m", load_s=12.0, peak_vram_mb=10_000, infer_s_per_job=2.5, loads=3, batches=9
    )
    measured = placement.cost_of(spec, seen)
    # Peak x 1.1 headroom: the declared 8 GB was an underestimate, as Ollama's were.
    assert (measured.vram_mb, measured.load_s, measured.infer_s) == (11_000, 12.0, 2.5)
    partial = placement.cost_of(spec, MeasuredCost("m", None, None, 4.0, 0, 1))
    assert (partial.vram_mb, partial.load_s, partial.infer_s) == (8_000, 30.0, 4.0)
    assert placement.cost_of(_spec("c", device="cpu"), seen).vram_mb == 0  # no VRAM on the CPU


def test_slots_take_free_memory_less_the_reserve() -> None:
    devices = [
        Device(0, "a", 24_576, 23_000, 1_576, "nvml"),
        Device(1, "b", 81_920, 81_000, 920, "nvml"),
    ]
    slots = placement.make_slots(devices, reserve_mb=1_024)
    assert [(s.id, s.device, s.capacity_mb) for s in slots] == [
        (placement.CPU_SLOT, "cpu", math.inf), (0, "cuda:0", 21_976), (1, "cuda:1", 79_976),
    ]  # fmt: skip


def test_choose_sends_each_model_to_a_slot_of_its_kind() -> None:
    slots = placement.make_slots([Device(0, "g", 24_000, 24_000, 0, "config")], reserve_mb=0)
    specs = {"gpu-model": _spec("gpu-model"), "cpu-model": _spec("cpu-model", device="cpu")}
    costs = {m: placement.cost_of(s, None) for m, s in specs.items()}
    demand = [Demand("gpu-model", 3, 0, 10.0), Demand("cpu-model", 3, 0, 10.0)]
    first = placement.choose(slots, demand, specs, costs, max_wait_s=600)
    assert first is not None
    slot, decision = first
    assert slot.is_gpu == (decision.model == "gpu-model")
    slot.last_run = 1.0  # it ran; the other slot is now the longest idle
    second = placement.choose(slots, demand, specs, costs, max_wait_s=600)
    assert second is not None and second[1].model != decision.model


def test_unplaceable_models_are_named_with_the_reason() -> None:
    specs = {"big": _spec("big", vram=80_000), "ok": _spec("ok"), "cpu": _spec("cpu", device="cpu")}
    costs = {m: placement.cost_of(s, None) for m, s in specs.items()}
    no_gpu = placement.make_slots([], reserve_mb=0)
    assert placement.unplaceable(no_gpu, specs, costs) == {
        "big": "this runner has no GPU", "ok": "this runner has no GPU",
    }  # fmt: skip
    one = placement.make_slots([Device(0, "g", 24_000, 24_000, 0, "config")], reserve_mb=1_000)
    assert placement.unplaceable(one, specs, costs) == {
        "big": "needs 80,000 MiB; the largest GPU here has 23,000 MiB free for models"
    }
