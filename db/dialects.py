"""Where SQLite and PostgreSQL differ, in one place: every queue statement is written
once, and takes the few pieces that differ from its connection's ``Dialect``.

- The clock: PostgreSQL's ``now()``, since many hosts share the database and their
  clocks differ; on SQLite (one host by construction) the Python clock, bound as a value.
- An upsert: ``postgresql.insert`` or ``sqlite.insert`` (the same ON CONFLICT API).
- An index hint: ``INDEXED BY`` on SQLite, whose planner without statistics reads every
  queued row through the state index; none on PostgreSQL.
- A list of ids: one array parameter on PostgreSQL (one statement text whatever the
  batch size, nothing re-rendered per call); an expanded IN list on SQLite.
- A state change and its events: on PostgreSQL one statement, the UPDATE in a
  data-modifying CTE that also inserts the events, run on the psycopg connection itself
  (``db.engine.driver_rows``); on SQLite the UPDATE, then one INSERT ... SELECT of the
  events of the ids it moved, in the caller's BEGIN IMMEDIATE transaction.

Written the same for both: ``FOR UPDATE SKIP LOCKED`` (SQLAlchemy leaves it out on
SQLite, where BEGIN IMMEDIATE serialises the writers instead) and the partial indexes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Interval,
    Table,
    any_,
    bindparam,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from db.engine import driver_rows
from db.models import EVENT_COLUMNS, UTCDateTime, job_events, jobs

# The SELECT of the job_events rows (EVENT_COLUMNS) for the jobs of a row source: the
# CTE of the jobs a statement moved, or the jobs table itself.
EventRows = Callable[[Any], Any]


class Moving(ABC):
    """A prebuilt state-moving statement (an UPDATE ... RETURNING of jobs) with the state
    events it writes; built once, run for every batch."""

    @abstractmethod
    def run(self, conn: Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run it with ``params``; the moved rows as dicts, their events written."""


class Dialect(ABC):
    """The pieces of a statement that differ between the databases (the list above)."""

    name: str

    @abstractmethod
    def now(self) -> ColumnElement[datetime]:
        """The queue's clock, in a statement built for this call."""

    @abstractmethod
    def after(self, seconds: float) -> ColumnElement[datetime]:
        """The queue's clock plus ``seconds``, in a statement built for this call."""

    @abstractmethod
    def clock(self) -> ColumnElement[datetime]:
        """The queue's clock in a prebuilt statement (built once, run many times)."""

    @abstractmethod
    def clock_plus(self, name: str) -> ColumnElement[datetime]:
        """``clock()`` plus the timedelta bound as ``name``, in a prebuilt statement."""

    @abstractmethod
    def insert(self, table: Table) -> Any:
        """An INSERT that takes ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""

    @abstractmethod
    def along(self, index: str) -> str:
        """What follows ``FROM jobs`` in a text statement that must read along ``index``."""

    @abstractmethod
    def ids_in(self, name: str) -> ColumnElement[bool]:
        """``jobs.id`` among the list of ids bound as ``name``."""

    @abstractmethod
    def moving(self, moved: Any, events: EventRows) -> Moving:
        """``moved`` (an UPDATE ... RETURNING id, attempts, ...) with its state events,
        whose runner and detail the statement binds as ``p_owner`` and ``p_detail``."""


@dataclass(frozen=True, eq=False)
class _OneStatement(Moving):
    stmt: Any

    def run(self, conn: Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        return driver_rows(conn, self.stmt, params)


class Postgres(Dialect):
    name = "postgresql"

    def now(self) -> ColumnElement[datetime]:
        return func.now()

    def after(self, seconds: float) -> ColumnElement[datetime]:
        return func.now() + literal(timedelta(seconds=seconds), Interval)

    def clock(self) -> ColumnElement[datetime]:
        return func.now()

    def clock_plus(self, name: str) -> ColumnElement[datetime]:
        return func.now() + bindparam(name, type_=Interval)

    def insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    def along(self, index: str) -> str:
        return ""

    def ids_in(self, name: str) -> ColumnElement[bool]:
        return jobs.c.id == any_(bindparam(name, type_=postgresql.ARRAY(BigInteger)))

    def moving(self, moved: Any, events: EventRows) -> Moving:
        """One round trip, and no event row passes through Python; autocommit (see
        ``Database.statement``) spares BEGIN and COMMIT."""
        rows = moved.cte("moved")
        written = insert(job_events).from_select(EVENT_COLUMNS, events(rows))
        return _OneStatement(select(rows).add_cte(written.cte("events")))


def _with_clock(params: dict[str, Any]) -> dict[str, Any]:
    """SQLite: a prebuilt statement's parameters with the clock values it binds: ``now``,
    and ``<name>_at`` for each timedelta ``<name>``."""
    clock = datetime.now(UTC)
    values = {**params, "now": clock}
    for key, value in params.items():
        if isinstance(value, timedelta):
            values[f"{key}_at"] = clock + value
    return values


@dataclass(frozen=True, eq=False)
class _ThenEvents(Moving):
    moved: Any
    events: Any  # INSERT ... SELECT of the events of the ids bound as ``moved_ids``

    def run(self, conn: Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        rows = [dict(r._mapping) for r in conn.execute(self.moved, _with_clock(params))]
        if rows:
            moved_ids = [r["id"] for r in rows]
            conn.execute(self.events, _with_clock({**params, "moved_ids": moved_ids}))
        return rows


class Sqlite(Dialect):
    name = "sqlite"

    def now(self) -> ColumnElement[datetime]:
        return literal(datetime.now(UTC), UTCDateTime)

    def after(self, seconds: float) -> ColumnElement[datetime]:
        return literal(datetime.now(UTC) + timedelta(seconds=seconds), UTCDateTime)

    def clock(self) -> ColumnElement[datetime]:
        return bindparam("now", type_=UTCDateTime)

    def clock_plus(self, name: str) -> ColumnElement[datetime]:
        return bindparam(f"{name}_at", type_=UTCDateTime)

    def insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def along(self, index: str) -> str:
        """SQLite's planner, without statistics, prefers the state index for ``state =
        'queued'`` and reads every queued row."""
        return f" INDEXED BY {index}"

    def ids_in(self, name: str) -> ColumnElement[bool]:
        return jobs.c.id.in_(bindparam(name, expanding=True))

    def moving(self, moved: Any, events: EventRows) -> Moving:
        """Two statements in the caller's BEGIN IMMEDIATE transaction: SQLite has no
        data-modifying CTE."""
        of_moved = events(jobs).where(self.ids_in("moved_ids"))
        return _ThenEvents(moved, insert(job_events).from_select(EVENT_COLUMNS, of_moved))


_DIALECTS: dict[str, Dialect] = {d.name: d for d in (Postgres(), Sqlite())}


def dialect_of(conn: Connection) -> Dialect:
    """The ``Dialect`` of ``conn``'s database (one object per kind, made once)."""
    try:
        return _DIALECTS[conn.dialect.name]
    except KeyError:
        raise ValueError(f"unsupported database {conn.dialect.name!r}") from None
