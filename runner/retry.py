"""Riding out a database that cannot be reached: one policy for every call a runner makes.

A write carrying the results of work already done (a batch's completion, a failure, a
hand-back, a load's cost) is never dropped, and the loop's own reads wait the same way:
back off from 0.2 s, doubling up to 5 s, and say so at each try. A database that was
replaced rather than paused (its SQLite file deleted) is not waited for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from db.engine import Database, DatabaseReplaced

log = logging.getLogger("gen3d.runner")
T = TypeVar("T")

UNREACHABLE = (OperationalError, InterfaceError)  # what a lost or refused connection raises
FIRST_S = 0.2  # the first wait ...
MOST_S = 5.0  # ... doubling up to this
STOPPING = "stopping so that no outputs are overwritten"


class Stopped(Exception):
    """The runner was asked to stop while it waited for the database."""


class DatabaseRetry:
    """Calls on ``db`` retried while it is unreachable.

    ``gone`` says why the database is not the one the runner started on (None: it is);
    it is asked at each failure, so a replaced database stops the wait at once.
    """

    def __init__(self, db: Database, gone: Callable[[], str | None]) -> None:
        self.db = db
        self.gone = gone

    def write(self, what: str, fn: Callable[[Connection], T], *, one: bool = False) -> T:
        """``fn(conn)`` in a write transaction (``one``: it is a single statement, which
        needs none on PostgreSQL), retried until it commits."""

        def once() -> T:
            with self.db.statement() if one else self.db.write() as conn:
                return fn(conn)

        return self.call(once, what=what)

    def read(self, what: str, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` on a read connection, retried until it answers."""

        def once() -> T:
            with self.db.read() as conn:
                return fn(conn)

        return self.call(once, what=what)

    def call(
        self, fn: Callable[[], T], *, what: str | None = None, stop: threading.Event | None = None
    ) -> T:
        """``fn()`` once the database answers. ``what`` names the work in the log line;
        with ``stop`` the waits end early when it is set, raising ``Stopped``. Raises
        ``DatabaseReplaced`` when the database went for good."""
        delay = FIRST_S
        while True:
            try:
                return fn()
            except UNREACHABLE as exc:
                why = self.gone()
                if why is not None:  # no database to wait for
                    raise DatabaseReplaced(f"{why}; {STOPPING}") from exc
                during = f" while {what}" if what else ""
                log.warning("database unavailable (%s)%s; retrying in %.1f s",
                            type(exc.orig or exc).__name__, during, delay)  # fmt: skip
                if stop is None:
                    time.sleep(delay)
                elif stop.wait(delay):
                    raise Stopped from exc
                delay = min(delay * 2, MOST_S)
