"""The schema as SQLAlchemy Core tables. Alembic revisions in ``migrations/`` create it;
a test checks that the migrated database matches these definitions exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect

STATES = ("queued", "running", "succeeded", "failed", "rejected", "cancelled", "waiting")
FINAL_STATES = ("succeeded", "failed", "rejected", "cancelled")

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; timestamptz on PostgreSQL, naive-UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a value SQLite computed itself
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200)),
    Column("task", String(16), nullable=False),
    Column("model", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("params", JSON, nullable=False),
    Column("seed", BigInteger),
    Column("output_format", String(8), nullable=False, server_default="glb"),
    # Resolved inputs: {"images": [uri], "image_sha256": [hex], "prompt": str, "mesh": uri}
    Column("inputs", JSON, nullable=False),
    # The entry exactly as the user wrote it (null when the file could not be parsed).
    Column("spec", JSON),
    Column("source_uri", Text, nullable=False),
    # -1: the file as a whole (one object, or unparseable); i >= 0: entry i of a list/JSONL.
    Column("source_entry", Integer, nullable=False, server_default="-1"),
    Column("source_sha256", String(64), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="3"),
    Column("run_after", UTCDateTime, nullable=False),
    Column("lease_owner", String(100)),
    Column("lease_expires_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("error", Text),
    Column("outputs_uri", Text),
    # How many times a runner died holding this job (its lease expired and was reaped).
    Column("lost_count", Integer, nullable=False, server_default="0"),
    # Chained stages ('then'): stage k of an entry's chain of ``stages`` rows waits for
    # its parent (stage k-1) to succeed and takes the parent's mesh as its input.
    Column("parent_id", BigId, ForeignKey("jobs.id")),
    Column("stage", Integer, nullable=False, server_default="0"),
    Column("stages", Integer, nullable=False, server_default="1"),
    UniqueConstraint("source_uri", "source_sha256", "source_entry", "stage"),
    CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")", name="state_known"),
    # A lease has an owner exactly while the job runs: "held by runner R" is then
    # ``lease_owner = R`` alone, the guard of every runner's update of its own jobs.
    CheckConstraint("(state = 'running') = (lease_owner IS NOT NULL)", name="lease_while_running"),
)

# The claim statement's access path: queued jobs of one model, most urgent first.
Index(
    "ix_jobs_claim",
    jobs.c.model,
    jobs.c.priority.desc(),
    jobs.c.id,
    postgresql_where=text("state = 'queued'"),
    sqlite_where=text("state = 'queued'"),
)
Index(
    "ix_jobs_lease",
    jobs.c.lease_expires_at,
    postgresql_where=text("state = 'running'"),
    sqlite_where=text("state = 'running'"),
)
# When the next queued job becomes runnable (an idle runner asks every poll interval).
Index(
    "ix_jobs_run_after",
    jobs.c.run_after,
    postgresql_where=text("state = 'queued'"),
    sqlite_where=text("state = 'queued'"),
)
Index("ix_jobs_state", jobs.c.state)
Index(
    "ix_jobs_parent_id",
    jobs.c.parent_id,
    postgresql_where=text("parent_id IS NOT NULL"),
    sqlite_where=text("parent_id IS NOT NULL"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id"), nullable=False, index=True),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("runner", String(100)),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("detail", Text),
)
# What an INSERT ... SELECT of events fills (every column but the id), in this order.
EVENT_COLUMNS = ["job_id", "from_state", "to_state", "at", "runner", "attempt", "detail"]

RUNNER_STATES = ("running", "stopped", "gone")

# One row per runner process start (a fresh id each time: a reused name would hide a
# dead runner's stale leases behind a live one's heartbeats).
runners = Table(
    "runners",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime),
    Column("resident_models", JSON, nullable=False),
    Column("devices", JSON, nullable=False),
    CheckConstraint(
        "state IN (" + ", ".join(f"'{s}'" for s in RUNNER_STATES) + ")", name="state_known"
    ),
)
Index("ix_runners_state", runners.c.state)

# What a model measurably costs: one row per load and per batch, written by the runner.
# The planner uses these (median load time, peak memory, seconds per job) over the
# registry's declared figures once a model has been measured.
model_loads = Table(
    "model_loads",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model", String(100), nullable=False),
    Column("runner", String(100)),
    Column("device", String(32)),
    Column("kind", String(8), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("batch_size", Integer),
    Column("peak_vram_mb", Float),
    Column("at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('load', 'batch')", name="kind_known"),
)
Index("ix_model_loads_model_kind_id", model_loads.c.model, model_loads.c.kind, model_loads.c.id)

# Where an interrupted listing of a bucket inbox resumes (None: start from the top).
ingest_cursors = Table(
    "ingest_cursors",
    metadata,
    Column("source", String(500), primary_key=True),
    Column("start_after", Text),
    Column("updated_at", UTCDateTime, nullable=False),
)
