"""Shared fixtures: a migrated database on each backend, and settings in a temp dir.

PostgreSQL: a throw-away database is created on the server named by
GEN3D_TEST_PG_URL (default: the local trust-auth server) and dropped at the end.
When it is unreachable the PostgreSQL cases are skipped on a laptop, but fail when
CI or GEN3D_REQUIRE_PG is set: CI must never pass by skipping the real database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from config import Settings, load_settings
from db.engine import Database, create, normalise_url
from db.migrate import upgrade

PG_ADMIN_URL = os.environ.get(
    "GEN3D_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = bool(os.environ.get("GEN3D_REQUIRE_PG") or os.environ.get("CI"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    admin_url = normalise_url(PG_ADMIN_URL)
    name = f"gen3d_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        message = f"PostgreSQL unreachable at {admin_url}: {exc}"
        if REQUIRE_PG:
            pytest.fail(message + " (required: CI / GEN3D_REQUIRE_PG is set)", pytrace=False)
        pytest.skip(message)
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    db = Database(create(url))
    upgrade(db)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each kind; the queue suite runs on both."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gen3d.sqlite3'}"
        db = Database(create(url))
        upgrade(db)
        db.dispose()
        yield url
        return
    url = request.getfixturevalue("pg_url")
    db = Database(create(url, pool=False))
    with db.write() as conn:
        tables = "job_events, jobs, runners, model_loads, ingest_cursors"
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    db.dispose()
    yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(create(db_url))
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return load_settings(
        env={},
        database_url=db_url,
        inbox=str(tmp_path / "inbox"),
        outputs=str(tmp_path / "outbox"),
    )


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """For tests of behaviour that does not depend on the database kind."""
    return load_settings(
        env={},
        database_url=f"sqlite:///{tmp_path / 'gen3d.sqlite3'}",
        inbox=str(tmp_path / "inbox"),
        outputs=str(tmp_path / "outbox"),
    )


@pytest.fixture(autouse=True)
def _no_runner_outlives_its_test() -> Iterator[None]:
    """A failed assertion must not leave runners behind, retrying a dropped database."""
    yield
    from tests.test_leases import STARTED

    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
