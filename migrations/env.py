"""Alembic environment: migrates the connection handed over by ``db.migrate.upgrade``,
or, from the ``alembic`` command line, the database the settings name."""

from __future__ import annotations

from alembic import context

from db.models import metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # plain `alembic upgrade head` with GEN3D_* settings
    from config import load_settings
    from db.engine import Database, create
    from db.migrate import migration_connection

    db = Database(create(load_settings().database_url, pool=False))
    with migration_connection(db) as conn:
        _run(conn)
