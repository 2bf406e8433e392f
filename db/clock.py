"""The clock every row's times are written by: PostgreSQL's ``now()`` when the database is
shared by many hosts (their own clocks differ), on SQLite (one host by construction) the
Python clock. One clock for the whole queue, so a job's ``run_after`` and the claim that
compares against it never come from two different hosts' clocks. Prebuilt statements take
theirs from the dialect (``Dialect.clock``, ``Dialect.clock_plus``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Connection, select

from db.dialects import dialect_of


def now_expr(conn: Connection) -> ColumnElement[datetime]:
    """Now, in a statement built for this call."""
    return dialect_of(conn).now()


def after_expr(conn: Connection, seconds: float) -> ColumnElement[datetime]:
    """Now plus ``seconds`` (negative: before now), in a statement built for this call."""
    return dialect_of(conn).after(seconds)


def now(conn: Connection) -> datetime:
    """The queue's clock, as a value."""
    value = conn.execute(select(now_expr(conn))).scalar_one()
    return value if value.tzinfo else value.replace(tzinfo=UTC)
