"""Recording a batch's outcomes: what succeeded, and what each failure means.

Every failure is judged here, in one place: a storage outage hands the job back without
using an attempt; a fault of the job's input, of its model or a refused folder is
permanent; anything else is retried after a jittered, doubling back-off until the job's
attempts are spent, and a job that failed for good gets an error manifest.
"""

from __future__ import annotations

import logging
import random
import traceback
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from adapters.base import ModelUnavailable
from config import Settings
from config.text import printable
from db import costs, queue
from runner import publish
from runner.outage import OutputsUnavailable
from runner.retry import DatabaseRetry
from storage.errors import InputError, StorageError, UnsafeFolder

log = logging.getLogger("gen3d.runner")


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
class Outcome:
    job: dict[str, Any]
    error: BaseException | None = None
    written: list[publish.Written] = field(default_factory=list)
    mesh_uri: str | None = None  # the stage's output mesh, a chained stage's input
    abandoned: bool = False  # taken from this runner meanwhile (cancelled, reaped)


class Recorder:
    """Writes outcomes to the queue (through ``retry``: the results of work done are
    never dropped) and counts them in ``stats``."""

    def __init__(
        self,
        settings: Settings,
        runner_id: str,
        *,
        outputs_root: str,
        retry: DatabaseRetry,
        stats: RunStats,
    ) -> None:
        self.settings = settings
        self.runner_id = runner_id
        self.outputs_root = outputs_root
        self.retry = retry
        self.stats = stats

    def record(
        self,
        outcomes: list[Outcome],
        *,
        model: dict[str, Any],
        timings: dict[str, float],
        measurement: dict[str, Any] | None = None,
    ) -> None:
        """Finish the batch's successes (with its cost row and the next stage of each
        chain, in one transaction), then judge each failure."""
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
            finished = queue.finish(conn, done, owner=self.runner_id)
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
            self.failed(o.job, o.error, model, timings)

    def failed(
        self,
        job: dict[str, Any],
        exc: BaseException,
        model: dict[str, Any],
        timings: dict[str, float],
    ) -> None:
        if isinstance(exc, OutputsUnavailable):
            self.hand_back(job, exc)
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
                owner=self.runner_id,
                error=message,
                permanent=permanent,
                retry_in_s=retry_in,
                detail=detail,
            ),
        )
        if state == "failed":
            self.stats.failed += 1
            log.warning("job %d failed: %s", job["id"], message)
            if not isinstance(exc, UnsafeFolder):  # (else its reason says why not)
                publish.publish_failure(self.outputs_root, job, model=model,
                                        timings=timings, runner=self.runner_id,
                                        error=message)  # fmt: skip
        elif state == "queued":
            self.stats.retried += 1
            log.warning(
                "job %d attempt %d failed (%s); retry in %.1f s",
                job["id"],
                job["attempts"],
                message,
                retry_in,
            )

    def hand_back(self, job: dict[str, Any], exc: BaseException) -> None:
        """Queue a job whose outputs the storage would not take, without using its attempt."""
        detail = f"{exc}; handed back without using an attempt"
        back = self.retry.write(
            "handing a job back",
            lambda conn: queue.postpone(
                conn, [job["id"]], owner=self.runner_id, reason=detail,
                retry_in_s=self.settings.runner.storage_retry_s,
            ),
        )  # fmt: skip
        if back:
            self.stats.postponed += 1
            log.debug("job %d handed back: %s", job["id"], detail)


def _id_ranges(ids: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10'."""
    spans: list[list[int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)
