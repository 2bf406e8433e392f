"""Listing checkpoints: where an interrupted listing of an inbox resumes."""

from __future__ import annotations

from sqlalchemy import Connection, select

from db.clock import now_expr
from db.dialects import dialect_of
from db.models import ingest_cursors


def load(conn: Connection, source: str) -> str | None:
    row = conn.execute(
        select(ingest_cursors.c.start_after).where(ingest_cursors.c.source == source)
    ).first()
    return row.start_after if row else None


def save(conn: Connection, source: str, start_after: str | None) -> None:
    stmt = (
        dialect_of(conn)
        .insert(ingest_cursors)
        .values(source=source, start_after=start_after, updated_at=now_expr(conn))
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["source"],
            set_={"start_after": stmt.excluded.start_after, "updated_at": stmt.excluded.updated_at},
        )
    )
