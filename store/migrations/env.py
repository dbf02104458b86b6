"""Alembic environment: runs online on the engine handed over in ``config.attributes``.

Each migration runs in a transaction of its own (``transaction_per_migration``),
so one can step outside it where the database needs that: building an index
on a live table with ``CREATE INDEX CONCURRENTLY`` (PostgreSQL) cannot run in
a transaction, and ``autocommit_block`` commits the migrations before it.
"""

from __future__ import annotations

from alembic import context

from store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
