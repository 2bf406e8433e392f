"""The runner: pick a model, claim a batch of its jobs, run it, record the results.

One model per batch is the point: a model is loaded once for many jobs. Which model runs
next, on which device, and what it evicts is ``runner.planner.plan`` (through
``runner.placement``), fed with the queue's demand and the models' measured costs.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import random
import secrets
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection

from adapters.base import Adapter, Item, ModelUnavailable, Result
from config import Settings
from config.registry import ModelSpec
from config.text import printable
from db import costs, queue, runners
from db.engine import Database, DatabaseReplaced
from db.queue import Outlook
from runner import gpus, outputs, placement, planner
from runner.held import Held
from runner.maintenance import Heartbeat, Maintenance, Reaper
from runner.preview import png_bytes, render
from runner.residency import Residency
from runner.retry import STOPPING, UNREACHABLE, DatabaseRetry, Stopped
from storage import objects
from storage.errors import InputError, StorageError, TransientError, UnsafeFolder
from storage.meshes import export_mesh
from storage.uris import display_name, read_checked, read_mesh

log = logging.getLogger("gen3d.runner")


class Shutdown(BaseException):  # noqa: N818 - a signal, not an error
    """Raised in the main thread by a second SIGINT/SIGTERM: drop the batch now."""


def new_runner_id() -> str:
    """Fresh per process start: a reused name would hide a dead runner's stale leases."""
    return f"{platform.node()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class RunStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    batches: int = 0
    loads: int = 0
    postponed: int = 0  # handed back by a storage outage, no attempt used


@dataclass
class _Outage:
    """The outputs' storage is out: claim nothing until a probe of it succeeds."""

    error: str  # the reason given to each job handed back
    since: float  # time.monotonic()
    delay: float  # until the next probe; doubles up to PROBE_MAX_S


@dataclass
class _Doomed:
    """A model whose queued jobs cannot run anywhere: they fail with ``error``."""

    model: str
    error: Exception


@dataclass
class _Outcome:
    job: dict[str, Any]
    error: BaseException | None = None
    written: list[outputs.Written] = field(default_factory=list)
    mesh_uri: str | None = None  # the stage's output mesh, a chained stage's input
    abandoned: bool = False  # taken from this runner meanwhile (cancelled, reaped)


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
        self._outage: _Outage | None = None
        self._last_outage: tuple[float, float] | None = None  # (when it ended, its delay)
        self._gone: str | None = None  # why the database is not the one we started on
        self._gone_lock = threading.Lock()
        self.retry = DatabaseRetry(db, self._replaced)
        self.residency = Residency(self.id, self.slots, self.retry.write)
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
                if self._outage is not None and not self._outputs_back():
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

    # ------------------------------------------------------------------ storage outages

    def _outputs_unavailable(self, exc: BaseException) -> outputs.OutputsUnavailable:
        """Note that the outputs' storage is out (logged once per outage): the run loop
        claims nothing until it is back, and the job is handed back, no attempt used."""
        reason = f"{type(exc).__name__}: {exc}"
        error = f"outputs unavailable: {reason}"
        if self._outage is None:
            now, delay = time.monotonic(), PROBE_FIRST_S
            if self._last_outage and now - self._last_outage[0] < PROBE_MAX_S:
                # Back so soon: the probe's small write passes where a job's does not (a
                # nearly full disk). Keep lengthening the pause rather than rerun batches.
                delay = min(self._last_outage[1] * 2, PROBE_MAX_S)
            self._outage = _Outage(error, now, delay)
            log.warning("outputs at %s cannot be written (%s); handing jobs back without "
                        "using an attempt, and claiming none until they can",
                        self.outputs_root, reason)  # fmt: skip
        return outputs.OutputsUnavailable(error)

    def _outputs_back(self) -> bool:
        """Probe the outputs (a small write) while they are out, waiting longer after each
        failed probe; True once they take writes again."""
        out = self._outage
        assert out is not None
        try:
            objects.probe(self.outputs_root)
        except Exception as exc:  # noqa: BLE001 - an outage, or the job's error will say
            if outputs.is_outage(exc):
                self.stop.wait(out.delay)
                out.delay = min(out.delay * 2, PROBE_MAX_S)
                return False
            log.warning("probing the outputs at %s: %s", self.outputs_root, exc)
        log.warning("outputs at %s can be written again after %.1f s; claiming jobs again",
                    self.outputs_root, time.monotonic() - out.since)  # fmt: skip
        self._outage, self._last_outage = None, (time.monotonic(), out.delay)
        return True

    def _hand_back(self, job: dict[str, Any], exc: BaseException) -> None:
        """Queue a job whose outputs the storage would not take, without using its attempt."""
        detail = f"{exc}; handed back without using an attempt"
        back = self.retry.write(
            "handing a job back",
            lambda conn: queue.postpone(
                conn, [job["id"]], owner=self.id, reason=detail,
                retry_in_s=self.settings.runner.storage_retry_s,
            ),
        )  # fmt: skip
        if back:
            self.stats.postponed += 1
            log.debug("job %d handed back: %s", job["id"], detail)

    # ------------------------------------------------------------------ maintenance

    def heartbeat(self) -> None:
        """One beat now (the maintenance scheduler beats every ``runner.heartbeat_s``)."""
        self._heartbeat.run()

    def reap(self) -> None:
        """One round of the reaper now (else every ``runner.reap_interval_s``)."""
        self._reaper.run()

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
            self._record([_Outcome(j, gone) for j in jobs], model={"id": model_id}, timings={})
        else:
            self._run_batch(spec, jobs, slot, decision.evict if decision else ())
        self.held.released()
        return len(jobs)

    # ------------------------------------------------------------------ one batch

    @property
    def adapters(self) -> dict[str, Adapter]:
        """Every loaded model, on any device."""
        return self.residency.adapters

    def unload_all(self) -> None:
        self.residency.unload_all()

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

    def _run_batch(
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
            self._record([_Outcome(j, exc) for j in jobs], model=model_info, timings={})
            return
        model_info.update(version=adapter.version, device=adapter.device)
        # Inputs are read per job, each distinct one once (the same picture named by
        # many jobs, or many times by one, is one read and one copy in memory), and the
        # batch runs in parts whose inputs stay within runner.max_batch_input_bytes.
        budget = self.settings.runner.max_batch_input_bytes
        outcomes: list[_Outcome] = []
        part: list[tuple[dict[str, Any], Item]] = []
        inputs = _Inputs(self.settings.limits, type(adapter).images_used)
        measurement: dict[str, Any] | None = None
        infer_s = 0.0
        for job in jobs:
            try:
                item = self._item(job, inputs)
            except InputError as exc:
                outcomes.append(_Outcome(job, exc))
                continue
            if part and inputs.held > budget:
                ran, measured, infer_s = self._infer(spec, slot, adapter, part, model_info, load_s)
                outcomes += ran
                measurement = measured or measurement
                part = []
                inputs.keep_only(item)
            part.append((job, item))
        if part:
            ran, measured, infer_s = self._infer(spec, slot, adapter, part, model_info, load_s)
            outcomes += ran
            measurement = measured or measurement
        self._record(
            outcomes,
            model=model_info,
            timings={"load_s": load_s, "inference_s": infer_s},
            measurement=measurement,
        )

    def _infer(
        self,
        spec: ModelSpec,
        slot: placement.Slot,
        adapter: Adapter,
        part: list[tuple[dict[str, Any], Item]],
        model_info: dict[str, Any],
        load_s: float,
    ) -> tuple[list[_Outcome], dict[str, Any] | None, float]:
        """Run one part of a batch and write its outputs: the outcomes, the cost row to
        record (None when a job failed: a failed batch's time says little), seconds a job."""
        items = [it for _, it in part]
        gpus.reset_peak(slot.device)
        t0 = time.perf_counter()
        results = self.residency.infer(adapter, spec, slot, items)
        batch_s = time.perf_counter() - t0
        infer_s = batch_s / len(items)
        measurement = None
        if not any(isinstance(r, BaseException) for r in results):
            measurement = self.residency.measure(spec, slot, batch_s, len(items))
        outcomes = [self._write(job, res, model_info, load_s, infer_s)
                    for (job, _), res in zip(part, results, strict=True)]  # fmt: skip
        return outcomes, measurement, infer_s

    def _item(self, job: dict[str, Any], inputs: _Inputs) -> Item:
        given = job["inputs"]
        limits = self.settings.limits
        images = given.get("images", [])
        mesh_uri = given.get("mesh")
        used = images if inputs.images_used is None else images[: inputs.images_used]
        return Item(
            job_id=job["id"],
            task=job["task"],
            params=job["params"],
            seed=job["seed"],
            prompt=given.get("prompt"),
            images=inputs.pictures(job, used),
            image_names=[display_name(u) for u in used],
            mesh=read_mesh(mesh_uri, max_bytes=limits.max_mesh_bytes,
                           max_faces=limits.max_mesh_faces,
                           max_pixels=limits.max_picture_pixels,
                           expect_sha256=given.get("mesh_sha256")) if mesh_uri else None,
            mesh_name=display_name(mesh_uri) if mesh_uri else None,
        )  # fmt: skip

    def _write(
        self,
        job: dict[str, Any],
        res: Result | BaseException,
        model: dict[str, Any],
        load_s: float,
        infer_s: float,
    ) -> _Outcome:
        if self.held.taken(job["id"]):
            return _Outcome(job, abandoned=True)
        if isinstance(res, BaseException):
            return _Outcome(job, res)
        if self._outage is not None:  # found by an earlier job of this batch
            return _Outcome(job, outputs.OutputsUnavailable(self._outage.error))
        t0 = time.perf_counter()
        folder = job["outputs_uri"]
        try:
            # Before anything is written: a real folder of ours, not another job's.
            earlier = outputs.check_folder(self.outputs_root, job)
            if earlier is not None and earlier.get("state") == "succeeded":
                # An earlier attempt published its result and died before recording it.
                log.info("job %d: outputs already published at %s; keeping them", job["id"], folder)
                return _Outcome(job, None, [], _mesh_uri(folder, earlier.get("mesh_artifact")))
            files = {a.name: a.data for a in res.artifacts}
            mesh_name = res.mesh_artifact
            if res.mesh is not None and mesh_name is None:
                fmt = job["output_format"]
                files = {**export_mesh(res.mesh, fmt), **files}  # e.g. mesh.obj, .mtl, texture
                mesh_name = f"mesh.{fmt}"
            written = [outputs.write_artifact(folder, n, data) for n, data in files.items()]
            stats = outputs.mesh_stats(res.mesh) if res.mesh is not None else None
            preview = res.preview_rgb
            if preview is None and res.mesh is not None:
                preview = render(res.mesh)
            if preview is not None:
                written.append(outputs.write_artifact(folder, "preview.png", png_bytes(preview)))
            timings = {
                "load_s": load_s,
                "inference_s": infer_s,
                "write_s": time.perf_counter() - t0,
            }
            doc = outputs.manifest(
                job,
                state="succeeded",
                model=model,
                artifacts=written,
                timings=timings,
                runner=self.id,
                mesh=stats,
                mesh_artifact=mesh_name,
                chain=self._chain(job),
                info=res.info,
            )
            outputs.write_manifest(folder, doc)
        except outputs.AlreadyPublished:
            log.warning("job %d: another attempt published first; its result stands", job["id"])
            return _Outcome(job, None, [], _mesh_uri(folder, _published_mesh(folder)))
        except Exception as exc:  # noqa: BLE001 - recorded per job
            if outputs.is_outage(exc):  # e.g. disk full, read-only: no attempt used
                return _Outcome(job, self._outputs_unavailable(exc))
            return _Outcome(job, exc)
        return _Outcome(job, None, written, _mesh_uri(folder, mesh_name))

    def _chain(self, job: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The stages of the job's chain, for its manifest (None: not a chain)."""
        if job["stages"] <= 1:
            return None
        with self.db.read() as conn:
            stages = queue.chain(conn, job["id"])
        return [{"stage": j["stage"] + 1, "job_id": j["id"], "task": j["task"],
                 "model": j["model"]} for j in stages]  # fmt: skip

    # ------------------------------------------------------------------ results

    def _record(
        self,
        outcomes: list[_Outcome],
        *,
        model: dict[str, Any],
        timings: dict[str, float],
        measurement: dict[str, Any] | None = None,
    ) -> None:
        outcomes = [o for o in outcomes if not o.abandoned]
        done = [o.job["id"] for o in outcomes if o.error is None]

        meshes = {  # stages whose chain goes on: their mesh is the next stage's input
            o.job["id"]: o.mesh_uri
            for o in outcomes
            if o.error is None and o.mesh_uri and o.job["stage"] < o.job["stages"] - 1
        }

        def write(conn: Connection) -> list[int]:
            if measurement is not None:  # same transaction: no extra commit per batch
                costs.record(conn, **measurement)
            finished = queue.finish(conn, done, owner=self.id)
            if meshes:  # the next stage of each chain, in the same transaction
                queue.promote(conn, {i: meshes[i] for i in finished if i in meshes})
            return finished

        lone = measurement is None and not meshes  # queue.finish alone: one statement
        finished = set(self.retry.write("recording results", write, one=lone))
        self.stats.succeeded += len(finished)
        if finished:
            # One line per batch (a line per job is a tenth of a no-work job's cost);
            # each job's folder at -v.
            log.info("%s: %d job(s) succeeded: %s", model["id"], len(finished),
                     _id_ranges(sorted(finished)))  # fmt: skip
        for o in outcomes:
            if o.error is None:
                if o.job["id"] in finished:
                    log.debug("job %d %s -> %s", o.job["id"], o.job["name"] or "",
                              o.job["outputs_uri"])  # fmt: skip
                else:
                    log.warning(
                        "job %d finished after its lease was lost; not recorded", o.job["id"]
                    )
                continue
            self._failed(o.job, o.error, model, timings)

    def _failed(
        self,
        job: dict[str, Any],
        exc: BaseException,
        model: dict[str, Any],
        timings: dict[str, float],
    ) -> None:
        if isinstance(exc, outputs.OutputsUnavailable):
            self._hand_back(job, exc)
            return
        permanent = isinstance(exc, InputError | ModelUnavailable | StorageError)
        # One printable line (the traceback, raw, goes to the event's detail): a name in
        # it is anybody's, and status and logs show it.
        message = printable(str(exc) if permanent else f"{type(exc).__name__}: {exc}")
        detail = None if permanent else "".join(traceback.format_exception(exc))
        rs = self.settings.runner
        backoff = min(rs.retry_max_s, rs.retry_base_s * 2 ** max(job["attempts"] - 1, 0))
        retry_in = backoff * random.uniform(0.5, 1.0)  # jitter spreads a herd of retries
        state = self.retry.write(
            "recording a failure",
            lambda conn: queue.fail(
                conn,
                job["id"],
                owner=self.id,
                error=message,
                permanent=permanent,
                retry_in_s=retry_in,
                detail=detail,
            ),
        )
        if state == "failed":
            self.stats.failed += 1
            log.warning("job %d failed: %s", job["id"], message)
            doc = outputs.manifest(
                job,
                state="failed",
                model=model,
                artifacts=[],
                timings=timings,
                runner=self.id,
                error=message,
                finished_at=datetime.now(UTC),
            )
            try:
                if not isinstance(exc, UnsafeFolder):  # (else its reason says why not)
                    outputs.check_folder(self.outputs_root, job)
                    outputs.write_manifest(job["outputs_uri"], doc)
            except UnsafeFolder as refused:
                log.warning("job %d: no error manifest written: %s", job["id"], refused)
            except (OSError, TransientError, StorageError, outputs.AlreadyPublished):
                log.exception("could not write the error manifest of job %d", job["id"])
        elif state == "queued":
            self.stats.retried += 1
            log.warning(
                "job %d attempt %d failed (%s); retry in %.1f s",
                job["id"],
                job["attempts"],
                message,
                retry_in,
            )


def _mesh_uri(folder: str, name: str | None) -> str | None:
    return objects.join(folder, name) if name else None


def _published_mesh(folder: str) -> str | None:
    """The stage's mesh named by the manifest an earlier attempt published."""
    return outputs.read_manifest(folder).get("mesh_artifact")


def _id_ranges(ids: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10'."""
    spans: list[list[int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


FLEET_MEMORY_S = 86_400.0  # runners seen this recently count as able to come back
MEASURED_TTL_S = 30.0  # how long a runner trusts its copy of the measured costs
PROBE_FIRST_S = 0.5  # first wait between probes of outputs that cannot be written ...
PROBE_MAX_S = 30.0  # ... doubling up to this


class _Inputs:
    """The pictures of one part of a batch: each distinct one (URI and recorded sha256)
    read once, through ``read_checked`` (no link since ingest, the bytes ingest hashed),
    and shared by every job that names it; ``held`` is the bytes held so far."""

    def __init__(self, limits: Any, images_used: int | None) -> None:
        self._limit = limits.max_picture_bytes
        self.images_used = images_used
        self._read: dict[tuple[str, str | None], bytes] = {}
        self.held = 0

    def pictures(self, job: dict[str, Any], uris: list[str]) -> list[bytes]:
        hashes = job["inputs"].get("image_sha256") or [None] * len(uris)
        out = []
        for n, uri in enumerate(uris):
            key = (uri, hashes[n] if n < len(hashes) else None)
            data = self._read.get(key)
            if data is None:
                what = "image" if len(uris) == 1 else f"images[{n}]"
                data = read_checked(uri, self._limit, sha256=key[1], what=what)
                self._read[key] = data
                self.held += len(data)
            out.append(data)
        return out

    def keep_only(self, item: Item) -> None:
        """A new part starts with ``item``: forget the pictures only the last part used."""
        keep = {id(data) for data in item.images}
        self._read = {k: v for k, v in self._read.items() if id(v) in keep}
        self.held = sum(len(v) for v in self._read.values())
