"""The batch in hand: the jobs this runner holds leases on, and those taken from it.

Shared by three threads of work: the loop claims and lets go, the heartbeat renews the
leases and notices jobs taken away (cancelled, reaped), and the batch's executor writes
outputs only for jobs still its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class Held:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()
        self._lost: set[int] = set()
        self._all_lost = False  # the database went: no job of any batch is ours to write

    def claimed(self, ids: Iterable[int]) -> None:
        """A new batch is in hand."""
        with self._lock:
            self._ids = set(ids)
            self._lost = set()

    def released(self) -> None:
        """The batch is recorded (or handed back): nothing is held."""
        with self._lock:
            self._ids = set()

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._ids)

    def renewed(self, before: set[int], renewed: Iterable[int]) -> set[int]:
        """Note the jobs a renewal of ``before`` did not renew; those newly lost.

        Only jobs held both before and after the renewal are judged: a batch claimed
        meanwhile is not in this renewal's answer and must not look taken away (it
        would be abandoned while still leased, and renewed, forever). Each lost job is
        reported once, not at every beat.
        """
        with self._lock:
            lost = (before - set(renewed)) & (self._ids - self._lost)
            self._lost |= lost
        return lost

    def lose_all(self) -> None:
        """The database is not the one the jobs came from: abandon everything."""
        with self._lock:
            self._all_lost = True
            self._lost |= self._ids

    def taken(self, job_id: int) -> bool:
        """Whether the job is no longer this runner's to write outputs for."""
        with self._lock:
            return self._all_lost or job_id in self._lost
