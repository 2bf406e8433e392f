"""Engines for the two supported databases, and the write-transaction discipline.

SQLite: WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for every write transaction. A
plain (deferred) BEGIN takes the write lock only at the first write, so two writers
that both read first deadlock and one gets ``database is locked`` at once, whatever
the timeout; IMMEDIATE makes them queue on the busy timeout instead. Reads stay
deferred and, under WAL, never wait for writers.

PostgreSQL: psycopg 3 (``postgresql+psycopg://``); plain ``postgresql://`` URLs are
taken to mean the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import ClauseElement

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE = "gen3d_write"


def normalise_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    u = make_url(url)
    if u.database and u.database != ":memory:":
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(u, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module; "begin" below owns it.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _json_loads(value: Any) -> Any:
    # SQLite gives a JSON column holding a bare number back as that number (the column
    # has numeric affinity), which orjson, unlike the stdlib decoder, refuses.
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return orjson.loads(value)
    return value


def create(url: str, *, pool: bool = True) -> Engine:
    """An engine for ``url``; ``pool=False`` for short-lived processes and forks."""
    url = normalise_url(url)
    # orjson reads the JSON columns (params, inputs) of every claimed job several times
    # faster than the stdlib decoder the drivers default to.
    kwargs: dict[str, Any] = {"json_deserializer": _json_loads}
    if not pool:
        kwargs["poolclass"] = NullPool
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection at checkout only if it sat idle for a while.

    ``pool_pre_ping`` pings at every checkout: a round trip per transaction, a tenth of
    a no-work job's cost in bench/queue.py. A connection that idled (where a server
    restart or an idle timeout catches it) is still tested; one used a moment ago is
    not, and if it died since, the caller's retry on OperationalError covers it
    (SQLAlchemy drops the pool's connections on the first disconnect error).
    """

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_conn: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - the pool replaces the connection
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


class DatabaseReplaced(RuntimeError):
    """The SQLite file this process started on was deleted or replaced under it: the
    process stops rather than write rows (or outputs by job id) nobody will read."""


@dataclass
class Database:
    """One database: an engine for reads and the same pool marked for writes."""

    engine: Engine
    writer: Engine = field(init=False)
    autocommit: Engine | None = field(init=False)
    # SQLite: the database file, and its (st_dev, st_ino) once first seen (``replaced``).
    sqlite_file: str | None = field(init=False, default=None)
    _file_id: tuple[int, int] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        name = self.engine.url.database or ""
        a_file = name not in ("", ":memory:") and not name.startswith("file:")  # not a URI
        if self.dialect == "sqlite" and a_file:
            self.sqlite_file = name
            self.replaced()
        self.writer = self.engine.execution_options(**{_WRITE: True})
        # PostgreSQL runs a lone statement as its own transaction: BEGIN and COMMIT
        # would be two more round trips (and server wake-ups) for nothing.
        self.autocommit = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.engine.dialect.name == "postgresql"
            else None
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def replaced(self) -> str | None:
        """Why this database is not the one this process started with, or None.

        A SQLite file deleted under a running process lives on for it (its open
        connections keep the deleted inode) while every other process gets a new, empty
        database whose ids start again at 1: outputs written by job id would then mix
        two databases' jobs. So the file's identity (st_dev, st_ino) is taken when first
        seen, and compared here. A PostgreSQL database (or SQLite in memory) has no file
        to lose: always None.
        """
        if self.sqlite_file is None:
            return None
        try:
            st = os.stat(self.sqlite_file)
        except FileNotFoundError:
            if self._file_id is None:  # not created yet: nothing was seen to lose
                return None
            return f"database file {self.sqlite_file} was deleted while this process used it"
        now = (st.st_dev, st.st_ino)
        if self._file_id is None:
            self._file_id = now
        elif now != self._file_id:
            return (
                f"database file {self.sqlite_file} was replaced by another file while this process"
                " used it"
            )
        return None

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        with self.writer.begin() as conn:
            yield conn

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """For one self-contained write statement (a claim or a batch's completion with
        its events in one CTE): autocommit on PostgreSQL, ``write()`` elsewhere (SQLite
        needs BEGIN IMMEDIATE to serialise writers, and its events are a second statement)."""
        if self.autocommit is None:
            with self.write() as conn:
                yield conn
        else:
            with self.autocommit.connect() as conn:
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


# ---------------------------------------------------------------------------- hot path


@dataclass(frozen=True)
class _DriverStatement:
    sql: str
    defaults: dict[str, Any]  # the statement's own bound values (its literals)
    utc: tuple[str, ...]  # result columns that are UTCDateTime


# Keyed by the statement object: the hot statements are built once per dialect.
_driver_statements: dict[ClauseElement, _DriverStatement] = {}


def driver_rows(
    conn: Connection, stmt: ClauseElement, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run a prebuilt PostgreSQL statement on the psycopg connection itself: its rows
    as dicts, UTC columns as aware UTC datetimes, errors as SQLAlchemy's.

    For the claim and a batch's completion, which run for every batch: SQLAlchemy's
    execution and result machinery cost more client time than decoding the statement's
    32 rows (``bench/queue.py`` prints the runners' CPU per job). The statement is still
    built and compiled by SQLAlchemy, once; psycopg prepares it on the server after a
    few runs, as it would through SQLAlchemy. SQLAlchemy's statement events and echo
    do not see these two. A dead connection is invalidated and the
    error raised as ``sqlalchemy.exc.OperationalError``, so callers' retries and the
    pool behave exactly as on the ordinary path.
    """
    import psycopg
    from psycopg.rows import dict_row

    prepared = _driver_statements.get(stmt)
    if prepared is None:
        from db.models import UTCDateTime

        compiled = stmt.compile(dialect=conn.dialect)
        columns = getattr(stmt, "selected_columns", ())
        utc = tuple(c.key for c in columns if isinstance(c.type, UTCDateTime))
        prepared = _driver_statements[stmt] = _DriverStatement(
            str(compiled), dict(compiled.params), utc
        )
    values = {**prepared.defaults, **params}
    raw: Any = conn.connection.driver_connection
    try:
        with raw.cursor(row_factory=dict_row) as cur:
            cur.execute(prepared.sql, values)
            rows: list[dict[str, Any]] = cur.fetchall() if cur.description else []
    except psycopg.Error as err:
        gone = conn.dialect.is_disconnect(err, raw, None)  # type: ignore[arg-type]
        if gone:
            conn.invalidate(err)
        raise DBAPIError.instance(
            prepared.sql, values, err, psycopg.Error, connection_invalidated=gone,
            dialect=conn.dialect,
        ) from err  # fmt: skip
    for key in prepared.utc:
        for row in rows:
            if (value := row[key]) is not None:
                row[key] = value.astimezone(UTC)
    return rows
