"""What more than one revision needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op


@contextmanager
def views_set_aside() -> Iterator[None]:
    """SQLite rebuilds a table to change its constraints, and refuses while views name
    it: drop the views for the rebuild and create them again, exactly as they were."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    views = bind.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'view'")).all()
    for name, _ in views:
        op.execute(f"DROP VIEW {name}")
    yield
    for _, sql in views:
        op.execute(sql)
