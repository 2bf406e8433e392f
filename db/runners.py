"""The runners table: who is working, since when, on what, and whether it still lives."""

from __future__ import annotations

import os
import platform
from typing import Any

from sqlalchemy import Connection, insert, select, update

from db.clock import after_expr, now_expr
from db.models import runners


def register(conn: Connection, runner_id: str, *, devices: list[Any] | None = None) -> None:
    clock = now_expr(conn)
    conn.execute(
        insert(runners).values(
            id=runner_id,
            host=platform.node(),
            pid=os.getpid(),
            state="running",
            started_at=clock,
            heartbeat_at=clock,
            resident_models=[],
            devices=devices or [],
        )
    )


def beat(conn: Connection, runner_id: str, *, resident: list[str]) -> bool:
    """Record a heartbeat; False when this runner was already declared gone."""
    done = conn.execute(
        update(runners)
        .where(runners.c.id == runner_id, runners.c.state == "running")
        .values(heartbeat_at=now_expr(conn), resident_models=resident)
    )
    return done.rowcount == 1


def stopped(conn: Connection, runner_id: str) -> None:
    conn.execute(
        update(runners)
        .where(runners.c.id == runner_id)
        .values(state="stopped", stopped_at=now_expr(conn), resident_models=[])
    )


def mark_gone(conn: Connection, *, silent_s: float) -> list[str]:
    """Runners silent for ``silent_s``: declared gone (after their jobs were reaped)."""
    return list(
        conn.execute(
            update(runners)
            .where(
                runners.c.state == "running", runners.c.heartbeat_at < after_expr(conn, -silent_s)
            )
            .values(state="gone", stopped_at=now_expr(conn))
            .returning(runners.c.id)
        ).scalars()
    )


def live(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(runners).where(runners.c.state == "running").order_by(runners.c.started_at)
    )
    return [dict(r._mapping) for r in rows]


def largest_gpu_mb(conn: Connection, *, within_s: float) -> int | None:
    """The biggest GPU (total MiB) any runner has reported in its last ``within_s``
    seconds, stopped ones included (a GPU host restarting still counts); None: none."""
    rows = conn.execute(
        select(runners.c.devices).where(runners.c.heartbeat_at >= after_expr(conn, -within_s))
    ).scalars()
    sizes = [int(d.get("total_mb", 0)) for devices in rows for d in devices or []]
    return max(sizes) if sizes else None
