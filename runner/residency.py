"""What a runner has loaded where: loads, evictions, out-of-memory retries, and the
cost rows (model_loads) that let the planner use measured figures."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection

from adapters.base import Adapter, Item, ModelUnavailable, Result, load_adapter
from config.registry import ModelSpec
from db import costs
from runner import gpus, placement

log = logging.getLogger("gen3d.runner")
MEASURE_EVERY_S = 5.0  # at most one batch-cost row per model this often


class Residency:
    def __init__(
        self,
        runner_id: str,
        slots: list[placement.Slot],
        persist: Callable[[str, Callable[[Connection], Any]], Any],
    ) -> None:
        self.runner_id = runner_id
        self.slots = slots
        self.persist = persist  # a write, retried while the database is away
        self.loads = 0
        self._measured_batch: dict[str, float] = {}  # model -> when its last batch row was

    @property
    def adapters(self) -> dict[str, Adapter]:
        """Every loaded model, on any device."""
        return {m: loaded.adapter for slot in self.slots for m, loaded in slot.residents.items()}

    def evict(self, slot: placement.Slot, names: Iterable[str]) -> None:
        freed = 0.0
        for name in names:
            loaded = slot.residents.pop(name, None)
            if loaded is None:
                continue
            freed += loaded.vram_mb
            try:
                loaded.adapter.unload()
            except Exception:  # noqa: BLE001 - it is gone from our books either way
                log.warning("unloading %s from %s failed", name, slot.device, exc_info=True)
            log.info("unloaded %s from %s", name, slot.device)
        if freed and slot.is_gpu:
            # The driver reports freed memory with a delay; loading at once can OOM.
            gpus.wait_for_free(slot.id, freed)

    def adapter(self, spec: ModelSpec, slot: placement.Slot) -> tuple[Adapter, float]:
        loaded = slot.residents.get(spec.id)
        if loaded is not None:
            loaded.last_used = time.monotonic()
            return loaded.adapter, 0.0
        try:
            adapter, load_s = self._load(spec, slot)
        except Exception as exc:  # noqa: BLE001 - one retry on an emptied device
            if not (slot.is_gpu and _is_oom(exc) and slot.residents):
                raise
            log.warning("out of memory loading %s on %s; unloading everything there and "
                        "retrying once", spec.id, slot.device)  # fmt: skip
            self.evict(slot, list(slot.residents))
            try:
                adapter, load_s = self._load(spec, slot)
            except Exception as again:
                if _is_oom(again):
                    raise ModelUnavailable(
                        f"{spec.id} does not fit on {slot.device} even with nothing else "
                        f"loaded: {again}"
                    ) from again
                raise
        return adapter, load_s

    def _load(self, spec: ModelSpec, slot: placement.Slot) -> tuple[Adapter, float]:
        adapter = load_adapter(spec.adapter, spec.id, spec.options)
        gpus.reset_peak(slot.device)
        t0 = time.perf_counter()
        adapter.load(slot.device)
        load_s = time.perf_counter() - t0
        peak = gpus.peak_reserved_mb(slot.device)
        vram = peak * placement.HEADROOM if peak is not None else float(spec.vram_mb)
        slot.residents[spec.id] = placement.Loaded(
            adapter, vram if slot.is_gpu else 0.0, time.monotonic()
        )
        self.loads += 1
        log.info("loaded %s on %s in %.2f s", spec.id, adapter.device, load_s)
        self.persist(
            "recording a load",
            lambda conn: costs.record(conn, model=spec.id, runner=self.runner_id,
                                      device=slot.device, kind="load", seconds=load_s,
                                      peak_vram_mb=peak),
        )  # fmt: skip
        return adapter, load_s

    def unload_all(self) -> None:
        for slot in self.slots:
            for model_id, loaded in list(slot.residents.items()):
                try:
                    loaded.adapter.unload()
                finally:
                    del slot.residents[model_id]

    def measure(
        self, spec: ModelSpec, slot: placement.Slot, seconds: float, size: int
    ) -> dict[str, Any] | None:
        """A batch's cost row for model_loads (written with the batch's results), at most
        one per model every MEASURE_EVERY_S: a fast model would add a row per batch."""
        peak = gpus.peak_reserved_mb(slot.device)
        if peak is not None and spec.id in slot.residents:
            resident = slot.residents[spec.id]
            resident.vram_mb = max(resident.vram_mb, peak * placement.HEADROOM)
        now = time.monotonic()
        if now - self._measured_batch.get(spec.id, -math.inf) < MEASURE_EVERY_S:
            return None
        self._measured_batch[spec.id] = now
        return {"model": spec.id, "runner": self.runner_id, "device": slot.device, "kind": "batch",
                "seconds": seconds, "batch_size": size, "peak_vram_mb": peak}  # fmt: skip

    def infer(
        self, adapter: Adapter, spec: ModelSpec, slot: placement.Slot, items: list[Item]
    ) -> list[Result | BaseException]:
        """Run the batch; out of GPU memory, unload the device's other models and try once
        more, then fail the batch's jobs with the reason (not retried: it would OOM again)."""
        for attempt in (1, 2):
            try:
                results: list[Result | BaseException] = adapter.run_batch(items)
                if len(results) != len(items):
                    raise RuntimeError(
                        f"{spec.id} returned {len(results)} results for {len(items)} jobs"
                    )
                return results
            except Exception as exc:  # noqa: BLE001 - the whole batch is lost, not the runner
                others = [m for m in slot.residents if m != spec.id]
                if slot.is_gpu and _is_oom(exc) and attempt == 1 and others:
                    log.warning("out of memory running %s on %s; unloading %s and retrying once",
                                spec.id, slot.device, ", ".join(others))  # fmt: skip
                    self.evict(slot, others)
                    continue
                if slot.is_gpu and _is_oom(exc):
                    gone = ModelUnavailable(
                        f"out of GPU memory running a batch of {len(items)} on {slot.device} "
                        f"with nothing else loaded: {exc}"
                    )
                    return [gone] * len(items)
                return [exc] * len(items)
        raise AssertionError("unreachable")


def _is_oom(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (torch.cuda.OutOfMemoryError, or its message)."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
