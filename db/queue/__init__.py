"""Every statement the queue runs on ``jobs`` and ``job_events``, in this package, so its
locking can be read in one sitting; callers use ``from db import queue``.

Each function takes a Connection inside a transaction the caller opened (use
``Database.write()`` for anything that writes: on SQLite that is ``BEGIN IMMEDIATE``).
State changes are single guarded UPDATEs (``WHERE state = ...``, or for a runner's own
jobs ``WHERE lease_owner = ...``), never read-modify-write in Python, so a runner that
lost its lease cannot overwrite the work of the one that took the job over. Every state
change writes its event in the same transaction (``state_events``).

- ``enqueue``: new rows from job files, idempotently
- ``demand``: what is runnable, asked before a claim
- ``leases``: claim, renew, finish, fail, release, postpone, and the reaper
- ``chains``: a stage's parent succeeded, or ended for good
- ``admin``: cancel, retry
- ``reads``: jobs and events as they are

The statements are written once; the few pieces where SQLite and PostgreSQL differ come
from ``db.dialects``, and the clock is ``db.clock``'s.
"""

from db.clock import after_expr, now, now_expr
from db.queue.admin import CANCELLABLE, RETRYABLE, cancel, retry
from db.queue.chains import chain, end_descendants, promote
from db.queue.demand import DEMAND_CAP, ModelDemand, Outlook, demand, outlook
from db.queue.enqueue import IN_CHUNK, Enqueued, Key, NewJob, enqueue_file, enqueue_files, known
from db.queue.leases import CLAIMED, claim, fail, finish, postpone, reap, release, renew
from db.queue.reads import (
    Arrival,
    arrivals,
    count_by_state,
    events,
    get_job,
    last_id,
    list_jobs,
)

__all__ = [
    "CANCELLABLE",
    "CLAIMED",
    "DEMAND_CAP",
    "IN_CHUNK",
    "RETRYABLE",
    "Arrival",
    "Enqueued",
    "Key",
    "ModelDemand",
    "NewJob",
    "Outlook",
    "after_expr",
    "arrivals",
    "cancel",
    "chain",
    "claim",
    "count_by_state",
    "demand",
    "end_descendants",
    "enqueue_file",
    "enqueue_files",
    "events",
    "fail",
    "finish",
    "get_job",
    "known",
    "last_id",
    "list_jobs",
    "now",
    "now_expr",
    "outlook",
    "postpone",
    "promote",
    "reap",
    "release",
    "renew",
    "retry",
]
