"""Bringing a database to the newest schema with Alembic, from code or the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from db.engine import Database

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_PG_MIGRATE_LOCK = 0x67656E33  # "gen3": serialises concurrent `migrate` runs


class SchemaOutOfDate(RuntimeError):
    pass


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate inside one write transaction (``migration_connection``)."""
    _migrate(db, command.upgrade, revision)


def downgrade(db: Database, revision: str) -> None:
    _migrate(db, command.downgrade, revision)


def _migrate(db: Database, step: Any, revision: str) -> None:
    cfg = alembic_config()
    with migration_connection(db) as conn:
        cfg.attributes["connection"] = conn
        step(cfg, revision)


@contextmanager
def migration_connection(db: Database) -> Iterator[Connection]:
    """A connection in one write transaction for migrating ``db`` (also what a plain
    ``alembic upgrade head`` gets, in migrations/env.py).

    PostgreSQL: an advisory lock, so racing processes queue, not collide. SQLite changes
    a table's constraints by building a new table and dropping the old one, and with
    foreign keys enforced that DROP fails while other rows refer to the old table's
    (job events to their jobs): enforcement is off for the migration, which SQLite
    allows only outside a transaction, and the references are checked before the
    commit instead.
    """
    sqlite = db.dialect == "sqlite"
    with db.writer.connect() as conn:
        driver: Any = conn.connection.driver_connection  # no transaction begun yet
        if sqlite:
            driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                if not sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATE_LOCK})
                yield conn
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise RuntimeError(f"the migration left rows that refer to none: {broken[:5]}")
        finally:
            if sqlite:
                driver.execute("PRAGMA foreign_keys=ON")


def ensure_schema(db: Database, *, auto: bool) -> None:
    """Migrate when ``auto`` (the SQLite default), else insist the schema is current."""
    if current_revision(db) == head_revision():
        return
    if auto:
        upgrade(db)
        return
    raise SchemaOutOfDate(
        "the database schema is not at the newest revision; run `python manage.py migrate`"
    )
