"""Running one claimed batch: its model resident, its inputs read, the adapter called,
the time measured, each result published, and every result or error an outcome.

The batch runs in parts whose inputs stay within ``runner.max_batch_input_bytes``; the
model's residency and out-of-memory policy are ``runner.residency``'s, publishing is
``runner.publish``'s, and what an outcome means for the queue is ``runner.outcomes``'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from adapters.base import Adapter, Item, Result
from config import Settings
from config.registry import ModelSpec
from db import queue
from runner import gpus, placement, publish
from runner.held import Held
from runner.inputs import Inputs
from runner.outage import OutputsUnavailable, StorageOutage, is_outage
from runner.outcomes import Outcome, Recorder, RunStats
from runner.residency import Residency
from runner.retry import DatabaseRetry
from storage.errors import InputError

Chains = dict[int, list[dict[str, Any]]]  # job id -> its chain's stages, for its manifest


@dataclass
class _Loaded:
    """What every part of one batch runs with."""

    spec: ModelSpec
    slot: placement.Slot
    adapter: Adapter
    model: dict[str, Any]  # the manifest's model: id, adapter, version, device
    load_s: float
    chains: Chains


class Executor:
    """Runs the batches the loop claims, one at a time, and hands their outcomes to the
    recorder; it decides nothing about which model runs next."""

    def __init__(
        self,
        settings: Settings,
        runner_id: str,
        *,
        outputs_root: str,
        residency: Residency,
        recorder: Recorder,
        retry: DatabaseRetry,
        held: Held,
        outage: StorageOutage,
        stats: RunStats,
    ) -> None:
        self.settings = settings
        self.runner_id = runner_id
        self.outputs_root = outputs_root  # resolved once: resolve() per job cost a fifth of it
        self.residency = residency
        self.recorder = recorder
        self.retry = retry
        self.held = held  # jobs taken away meanwhile are not published
        self.outage = outage  # once one job finds the outputs out, the rest are handed back
        self.stats = stats

    def fail(self, jobs: list[dict[str, Any]], error: Exception, model_id: str) -> None:
        """A batch whose model cannot run: each job fails with ``error``."""
        self.recorder.record([Outcome(j, error) for j in jobs], model={"id": model_id},
                             timings={})  # fmt: skip

    def run(
        self,
        spec: ModelSpec,
        jobs: list[dict[str, Any]],
        slot: placement.Slot,
        evict: Iterable[str] = (),
    ) -> None:
        model_info: dict[str, Any] = {"id": spec.id, "adapter": spec.adapter}
        slot.last_run = time.monotonic()
        try:
            self.residency.evict(slot, [m for m in evict if m != spec.id])
            adapter, load_s = self.residency.adapter(spec, slot)
            self.stats.loads = self.residency.loads
        except Exception as exc:  # noqa: BLE001 - recorded per job
            self.recorder.record([Outcome(j, exc) for j in jobs], model=model_info, timings={})
            return
        model_info.update(version=adapter.version, device=adapter.device)
        batch = _Loaded(spec, slot, adapter, model_info, load_s, self._chains(jobs))
        # Inputs are read per job, each distinct one once, and the batch runs in parts
        # whose inputs stay within runner.max_batch_input_bytes.
        budget = self.settings.runner.max_batch_input_bytes
        outcomes: list[Outcome] = []
        part: list[tuple[dict[str, Any], Item]] = []
        inputs = Inputs(self.settings.limits, type(adapter).images_used)
        measurement: dict[str, Any] | None = None
        infer_s = 0.0
        for job in jobs:
            try:
                item = inputs.item(job)
            except InputError as exc:
                outcomes.append(Outcome(job, exc))
                continue
            if part and inputs.held > budget:
                ran, measured, infer_s = self._infer(batch, part)
                outcomes += ran
                measurement = measured or measurement
                part = []
                inputs.keep_only(item)
            part.append((job, item))
        if part:
            ran, measured, infer_s = self._infer(batch, part)
            outcomes += ran
            measurement = measured or measurement
        self.recorder.record(
            outcomes,
            model=model_info,
            timings={"load_s": load_s, "inference_s": infer_s},
            measurement=measurement,
        )

    def _chains(self, jobs: list[dict[str, Any]]) -> Chains:
        """The stages of each job's chain, for its manifest, read once for the batch
        before anything is written: publishing does no database work."""
        staged = [j["id"] for j in jobs if j["stages"] > 1]
        if not staged:
            return {}

        def read(conn: Connection) -> Chains:
            return {i: [{"stage": j["stage"] + 1, "job_id": j["id"], "task": j["task"],
                         "model": j["model"]} for j in queue.chain(conn, i)]
                    for i in staged}  # fmt: skip

        return self.retry.read("reading the chains", read)

    def _infer(
        self, batch: _Loaded, part: list[tuple[dict[str, Any], Item]]
    ) -> tuple[list[Outcome], dict[str, Any] | None, float]:
        """Run one part of a batch and publish its outputs: the outcomes, the cost row to
        record (None when a job failed: a failed batch's time says little), seconds a job."""
        spec, slot = batch.spec, batch.slot
        items = [it for _, it in part]
        gpus.reset_peak(slot.device)
        t0 = time.perf_counter()
        results = self.residency.infer(batch.adapter, spec, slot, items)
        batch_s = time.perf_counter() - t0
        infer_s = batch_s / len(items)
        measurement = None
        if not any(isinstance(r, BaseException) for r in results):
            measurement = self.residency.measure(spec, slot, batch_s, len(items))
        outcomes = [self._outcome(batch, job, res, infer_s)
                    for (job, _), res in zip(part, results, strict=True)]  # fmt: skip
        return outcomes, measurement, infer_s

    def _outcome(
        self, batch: _Loaded, job: dict[str, Any], res: Result | BaseException, infer_s: float
    ) -> Outcome:
        """Publish a job's result; what happened to it, as an outcome to record."""
        if self.held.taken(job["id"]):
            return Outcome(job, abandoned=True)
        if isinstance(res, BaseException):
            return Outcome(job, res)
        if self.outage.error is not None:  # found by an earlier job of this batch
            return Outcome(job, OutputsUnavailable(self.outage.error))
        try:
            done = publish.publish(self.outputs_root, job, res, model=batch.model,
                                   load_s=batch.load_s, infer_s=infer_s, runner=self.runner_id,
                                   chain=batch.chains.get(job["id"]))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - recorded per job
            if is_outage(exc):  # e.g. disk full, read-only: no attempt used
                return Outcome(job, self.outage.noticed(exc))
            return Outcome(job, exc)
        return Outcome(job, None, done.written, done.mesh_uri)
