"""A runner's upkeep: small periodic services, each with one job and its own interval.

They run on a background scheduler beside the claim loop, so a long batch neither
delays a lease renewal nor the return of a dead runner's jobs. A new kind of upkeep (a
pruner, a GPU sampler) is one more class with ``name``, ``interval_s`` and ``run``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from db import queue, runners
from db.engine import Database
from runner.held import Held

log = logging.getLogger("gen3d.runner")


class Service(Protocol):
    name: str
    interval_s: float

    def run(self) -> None:
        """One round; it logs its own trouble (the next round tries again)."""


class Heartbeat:
    """Renew this runner's leases and say what it has loaded; note jobs taken away
    (cancelled, reaped) so that their outputs are not written."""

    name = "heartbeat"

    def __init__(
        self,
        db: Database,
        runner_id: str,
        held: Held,
        *,
        interval_s: float,
        lease_s: float,
        resident: Callable[[], list[str]],
        gone: Callable[[], bool],
    ) -> None:
        self.db, self.runner_id, self.held = db, runner_id, held
        self.interval_s, self.lease_s = interval_s, lease_s
        self.resident = resident  # the models loaded now, for other runners' plans
        self.gone = gone  # whether the database was replaced (checked while busy, too)

    def run(self) -> None:
        if self.gone():
            return
        before = self.held.ids()
        try:
            with self.db.write() as conn:
                renewed = queue.renew(
                    conn, sorted(before), owner=self.runner_id, lease_s=self.lease_s
                )
                runners.beat(conn, self.runner_id, resident=self.resident())
        except Exception:  # noqa: BLE001 - the next beat tries again; the lease has slack
            log.warning("heartbeat failed", exc_info=True)
            return
        lost = self.held.renewed(before, renewed)
        if lost:
            log.warning("jobs %s were taken from this runner; abandoning them", sorted(lost))


class Reaper:
    """Return the jobs of runners that stopped heartbeating (their leases expired), then
    declare those runners gone. Any runner may do it; the statements are idempotent."""

    name = "reaper"

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float,
        max_runner_deaths: int,
        silent_s: float,
        wake: threading.Event,
    ) -> None:
        self.db, self.interval_s, self.wake = db, interval_s, wake
        self.max_runner_deaths = max_runner_deaths  # a job whose runners died this often fails
        self.silent_s = silent_s  # a runner this long without a heartbeat is gone

    def run(self) -> None:
        try:
            with self.db.write() as conn:
                reaped = queue.reap(conn, max_runner_deaths=self.max_runner_deaths)
                gone = runners.mark_gone(conn, silent_s=self.silent_s)
        except Exception:  # noqa: BLE001
            log.warning("reaping failed", exc_info=True)
            return
        if reaped:
            log.warning("reaped %d job(s) with expired leases: %s", len(reaped), reaped)
            self.wake.set()  # the loop may claim them now
        if gone:
            log.warning("runners declared gone: %s", gone)


class Maintenance:
    """The services on one background scheduler: a round that overruns its interval is
    not run twice at once, and rounds missed meanwhile are run once."""

    def __init__(self, services: Sequence[Service]) -> None:
        self.services = list(services)
        self._scheduler: Any = None

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(daemon=True)
        for service in self.services:
            scheduler.add_job(service.run, "interval", seconds=service.interval_s,
                              id=service.name, max_instances=1, coalesce=True)  # fmt: skip
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
