"""Shared fixtures: a migrated database on each backend, and settings in a temp dir.

PostgreSQL: a throw-away database is created on the server named by
GEN3D_TEST_PG_URL (default: the local trust-auth server) and dropped at the end.
When it is unreachable the PostgreSQL cases are skipped on a laptop, but fail when
CI or GEN3D_REQUIRE_PG is set: CI must never pass by skipping the real database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.s3_ingest import moto_server
from config import Settings, load_settings
from db.engine import Database, create, normalise_url
from db.migrate import upgrade
from storage import objects
from tests.processes import STARTED

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


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server in a process of its own, as a real endpoint would be: in a thread of
    the test process it shared one interpreter lock with the boto3 clients it served,
    and the 10,000-key listing test ran twice as long."""
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("wb")
    server, url = moto_server(log)
    yield url
    server.terminate()
    server.wait(timeout=10)
    log.close()


@pytest.fixture
def point_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Point boto3 (through its own environment variables) at an S3 endpoint URL."""

    def point(url: str) -> None:
        env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        objects.reset_clients()

    yield point
    objects.reset_clients()


@pytest.fixture
def aws(moto_url: str, point_aws: Callable[[str], None]) -> None:
    """boto3 pointed at the session's moto server."""
    point_aws(moto_url)


@pytest.fixture(autouse=True)
def _no_runner_outlives_its_test() -> Iterator[None]:
    """A failed assertion must not leave runners behind, retrying a dropped database."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
