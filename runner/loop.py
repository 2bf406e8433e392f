"""The runner's loop: choose a model, claim a batch of its jobs, hand it on, wait.

One model per batch is the point: a model is loaded once for many jobs. Which model runs
next, on which device, and what it evicts is ``runner.planner.plan`` (through
``runner.placement``), fed with the queue's demand and the models' measured costs. The
batch itself is ``runner.batch``'s; upkeep (heartbeat, reaper) is ``runner.maintenance``'s.
The loop stops for good when its SQLite file is deleted or replaced under it.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from adapters.base import Adapter, ModelUnavailable
from config import Settings
from db import costs, queue, runners
from db.engine import Database, DatabaseReplaced
from db.queue import Outlook
from runner import gpus, placement, planner
from runner.batch import Executor
from runner.held import Held
from runner.maintenance import Heartbeat, Maintenance, Reaper
from runner.outage import StorageOutage
from runner.outcomes import Recorder, RunStats
from runner.residency import Residency
from runner.retry import STOPPING, UNREACHABLE, DatabaseRetry, Stopped
from storage.errors import InputError

__all__ = ["RunStats", "Runner", "Shutdown", "new_runner_id"]
log = logging.getLogger("gen3d.runner")
FLEET_MEMORY_S = 86_400.0  # runners seen this recently count as able to come back
MEASURED_TTL_S = 30.0  # how long a runner trusts its copy of the measured costs


class Shutdown(BaseException):  # noqa: N818 - a signal, not an error
    """Raised in the main thread by a second SIGINT/SIGTERM: drop the batch now."""


def new_runner_id() -> str:
    """Fresh per process start: a reused name would hide a dead runner's stale leases."""
    return f"{platform.node()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class _Doomed:
    """A model whose queued jobs cannot run anywhere: they fail with ``error``."""

    model: str
    error: Exception


class Runner:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        runner_id: str | None = None,
        wake: threading.Event | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = settings.registry
        self.id = runner_id or new_runner_id()
        # (model, until): keep claiming this model without reading the demand until then
        self._plan: tuple[str, float, placement.Slot] | None = None
        self.wake = wake or threading.Event()
        self.stop = stop or threading.Event()
        self.outputs_root = settings.outputs_root
        self.devices = gpus.inventory(settings.gpus)
        self.slots = placement.make_slots(self.devices, settings.runner.vram_reserve_mb)
        self._measured: dict[str, costs.MeasuredCost] = {}
        self._measured_at = -math.inf
        self._warned: set[str] = set()
        # The models this runner could run (None until the first plan): an idle runner
        # waits for their jobs only, not for work that another runner's GPU must take.
        self._mine: set[str] | None = None
        self.stats = RunStats()
        self.held = Held()  # the batch in hand, and those of its jobs taken away
        self._gone: str | None = None  # why the database is not the one we started on
        self._gone_lock = threading.Lock()
        self.retry = DatabaseRetry(db, self._replaced)
        self.residency = Residency(self.id, self.slots, self.retry.write)
        self.outage = StorageOutage(self.outputs_root, self.stop)
        recorder = Recorder(settings, self.id, outputs_root=self.outputs_root, retry=self.retry,
                            stats=self.stats)  # fmt: skip
        self.executor = Executor(
            settings, self.id, outputs_root=self.outputs_root, residency=self.residency,
            recorder=recorder, retry=self.retry, held=self.held, outage=self.outage,
            stats=self.stats,
        )  # fmt: skip
        rs = settings.runner
        self._heartbeat = Heartbeat(
            db, self.id, self.held, interval_s=rs.heartbeat_s, lease_s=rs.lease_s,
            resident=lambda: sorted(self.adapters), gone=self._database_gone,
        )  # fmt: skip
        self._reaper = Reaper(db, interval_s=rs.reap_interval_s, silent_s=rs.lease_s,
                              max_runner_deaths=rs.max_runner_deaths, wake=self.wake)  # fmt: skip
        self.maintenance = Maintenance([self._heartbeat, self._reaper])

    # ------------------------------------------------------------------ loop

    def run(self, *, until_idle: bool = False, max_jobs: int | None = None) -> RunStats:
        """Work until stopped; ``until_idle``: also stop once no job this runner could run
        is queued or running.

        A first signal (``stop``) finishes the batch in hand; ``Shutdown`` (a second
        signal) hands the batch back to the queue at once.
        """
        poll = self.settings.runner.poll_interval_s
        devices = [d.as_dict() for d in self.devices]
        self.retry.write(
            "registering", lambda conn: runners.register(conn, self.id, devices=devices)
        )
        self._database_gone()  # takes the SQLite file's identity, if not taken yet
        self.maintenance.start()
        try:
            while not self.stop.is_set():
                done = self.stats.claimed - self.stats.postponed
                left = None if max_jobs is None else max_jobs - done
                if left is not None and left <= 0:
                    break
                if not self.outage.over():  # probes, and waits, while the outputs are out
                    continue
                try:
                    # Before a claim commits nothing is held: wait for the database.
                    looked = self.retry.call(partial(self._work_or_look, left), stop=self.stop)
                except Stopped:
                    break
                if looked is None:  # a batch ran
                    continue
                ahead, clock = looked
                # Idle means no job of a model this runner could run is queued or
                # running: one running elsewhere can still come back (a dead runner's,
                # once its lease is reaped). Work only a bigger GPU can take is left to
                # the runner that has one.
                nxt = ahead.next_run_after
                if until_idle and nxt is None and not ahead.any_running:
                    break
                if self._database_gone():  # idle: the heartbeat checks while busy
                    break
                # Wait for the next job's back-off to end, at most a poll interval. Jobs
                # already due that this step left are waiting to fill a batch or for
                # the runner that holds their model: no reason to poll sooner.
                due_in = None if nxt is None else (nxt - clock).total_seconds()
                delay = poll if due_in is None or due_in <= 0 else min(max(due_in, 0.01), poll)
                self.wake.wait(delay)
                self.wake.clear()
        except Shutdown:
            held = sorted(self.held.ids())
            with self.db.write() as conn:
                back = queue.release(
                    conn, held, owner=self.id, reason="runner stopped by a second signal"
                )
            log.warning("second signal: %d job(s) handed back to the queue", len(back))
        finally:
            self.maintenance.stop()
            self.unload_all()
            try:
                if self._gone is None:  # else a new connection would make the file anew
                    with self.db.write() as conn:
                        runners.stopped(conn, self.id)
            except UNREACHABLE:
                log.warning("could not mark runner %s stopped: database unavailable", self.id)
        if self._gone is not None:
            raise DatabaseReplaced(f"{self._gone}; {STOPPING}")
        return self.stats

    def _work_or_look(self, limit: int | None) -> tuple[Outlook, datetime] | None:
        """Run a batch (None), or, with nothing to claim now, what is ahead in the queue
        and the database's clock."""
        if self.step(limit=limit):
            return None
        with self.db.read() as conn:
            return queue.outlook(conn, self._mine), queue.now(conn)

    def _database_gone(self) -> bool:
        """Whether the SQLite file this runner started on was deleted or replaced (asked
        by the heartbeat while busy, by the loop while idle, and at each failed call on
        the database). Its job ids now name other jobs than the new database's, whose
        runners write to the same folders: stop at once, abandoning the batch in hand
        rather than writing its outputs."""
        why = self.db.replaced()
        if why is None:
            return False
        self.held.lose_all()
        with self._gone_lock:
            first, self._gone = self._gone is None, why
        if first:
            log.error("%s; %s", why, STOPPING)
        self.stop.set()
        self.wake.set()
        return True

    def _replaced(self) -> str | None:
        """Why the database went for good (None: it did not): a failed call stops waiting."""
        return self._gone if self._database_gone() else None

    # ------------------------------------------------------------------ maintenance

    def heartbeat(self) -> None:
        """One beat now (the maintenance scheduler beats every ``runner.heartbeat_s``)."""
        self._heartbeat.run()

    def reap(self) -> None:
        """One round of the reaper now (else every ``runner.reap_interval_s``)."""
        self._reaper.run()

    @property
    def adapters(self) -> dict[str, Adapter]:
        """Every loaded model, on any device."""
        return self.residency.adapters

    def unload_all(self) -> None:
        self.residency.unload_all()

    # ------------------------------------------------------------------ one batch

    def step(self, *, limit: int | None = None) -> int:
        """Claim and run one batch; the number of jobs it held (0: nothing to do)."""
        # Batch by model: while a model's batches come back full, keep claiming it and
        # skip the demand query (a GROUP BY over the queue) until the plan expires.
        plan = self._plan if self._plan and time.monotonic() < self._plan[1] else None
        decision: planner.Decision | None = None
        doomed: Exception | None = None
        if plan is not None:
            slot, model_id = plan[2], plan[0]
        else:
            chosen = self._choose()
            if chosen is None:
                return 0
            if isinstance(chosen, _Doomed):  # answered once: its jobs fail below
                slot, model_id, doomed = self.slots[0], chosen.model, chosen.error
            else:
                slot, decision = chosen
                model_id = decision.model
                until = time.monotonic() + self.settings.runner.plan_interval_s
                self._plan = (model_id, until, slot)
        spec = self.registry.models.get(model_id)
        size = spec.max_batch if spec else 32
        if limit is not None:
            size = min(size, limit)
        with self.db.statement() as conn:
            jobs = queue.claim(
                conn,
                model=model_id,
                limit=size,
                owner=self.id,
                lease_s=self.settings.runner.lease_s,
                outputs_root=self.outputs_root,
            )
        if len(jobs) < size:
            self._plan = None  # the model ran dry: read the demand again next time
        if not jobs:
            return self.step(limit=limit) if plan is not None else 0
        self.held.claimed(j["id"] for j in jobs)
        self.stats.claimed += len(jobs)
        self.stats.batches += 1
        if spec is None or doomed is not None:
            gone = doomed or InputError(f"model {model_id!r} is not in the registry any more")
            self.executor.fail(jobs, gone, model_id)
        else:
            self.executor.run(spec, jobs, slot, decision.evict if decision else ())
        self.held.released()
        return len(jobs)

    def _choose(self) -> tuple[placement.Slot, planner.Decision] | _Doomed | None:
        """Read the queue's demand (and, every half minute, the measured costs) and ask
        the planner for the next batch; a model not in the registry, or too big for any
        GPU seen, is answered at once (its jobs fail), so it cannot block the queue."""
        rs = self.settings.runner
        with self.db.read() as conn:
            demand = queue.demand(conn)
            clock = queue.now(conn)
            others = [r for r in runners.live(conn) if r["id"] != self.id]
            fleet_gpu_mb = runners.largest_gpu_mb(conn, within_s=FLEET_MEMORY_S)
            if time.monotonic() - self._measured_at > MEASURED_TTL_S:
                self._measured = costs.measured(conn)
                self._measured_at = time.monotonic()
        specs = self.registry.models
        model_costs = {
            m: placement.cost_of(spec, self._measured.get(m)) for m, spec in specs.items()
        }
        cannot = placement.unplaceable(self.slots, specs, model_costs)
        self._mine = set(specs) - set(cannot)  # a CPU slot always exists
        for d in demand:
            if d.model not in specs and d.ready:
                return _Doomed(d.model, InputError(f"model {d.model!r} is not in the registry"))
        waiting = {d.model: d.ready for d in demand if d.ready}
        for model_id, why in cannot.items():
            if model_id not in waiting:
                continue
            need = model_costs[model_id].vram_mb + rs.vram_reserve_mb
            if fleet_gpu_mb is None or fleet_gpu_mb < need:
                # No runner seen in a day has a GPU that could hold it: fail its jobs with
                # the reason rather than leave them queued forever.
                return _Doomed(model_id, ModelUnavailable(
                    f"model {model_id!r} cannot run here ({why}) and no runner seen in the "
                    f"last day has a GPU with {need:,.0f} MiB; start a runner on such a GPU"
                ))  # fmt: skip
            if model_id not in self._warned:
                self._warned.add(model_id)
                log.warning("not running %s here: %s (another runner may)", model_id, why)
        held = {m for r in others for m in r["resident_models"] or []}
        return placement.choose(
            self.slots, placement.demand_for_planner(demand, clock), specs, model_costs,
            max_wait_s=rs.max_wait_s, held_elsewhere=held,
        )  # fmt: skip
