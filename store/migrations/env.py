"""Alembic environment: runs online on the engine handed over in ``config.attributes``.

On PostgreSQL each migration runs in a transaction of its own
(``transaction_per_migration``), so one can step outside it where the
database needs that: ``CREATE INDEX CONCURRENTLY`` (0008) cannot run in a
transaction, and ``autocommit_block`` commits the migrations before it.
Processes upgrading at once wait for each other on an advisory lock
(``store.migrate.migration_lock``). On SQLite the whole upgrade is one
``BEGIN IMMEDIATE`` transaction, which serializes processes by itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from store.models import Base

config = context.config
engine = config.attributes["engine"]


def _configure(connection: Connection, per_migration: bool) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=per_migration,
    )


if engine.dialect.name == "postgresql":
    with engine.connect() as connection:
        _configure(connection, per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    with engine.begin() as connection:
        _configure(connection, per_migration=False)
        context.run_migrations()
