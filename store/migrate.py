"""Alembic migrations run from code: ``loyalcast db upgrade`` and the tests call these.

The scheduler, the API and most commands upgrade the schema when they start,
so after a release several processes may try at once. On PostgreSQL an
upgrade first takes a session-level advisory lock of the database's own:
the first process migrates, the others wait for it and then find nothing
left to do. A migration that builds an index ``CONCURRENTLY`` (0008) would
otherwise race another process dropping and building the same index. The
lock is polled with ``pg_try_advisory_lock`` rather than waited for with
``pg_advisory_lock``: a statement blocked on the lock holds a snapshot, and
``CREATE INDEX CONCURRENTLY`` waits for every older snapshot to go, so the
two would wait on each other. On SQLite an upgrade is one ``BEGIN IMMEDIATE``
transaction, which serializes processes by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

__all__ = ["MIGRATION_LOCK", "alembic_config", "current_revision", "migration_lock", "upgrade"]

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

#: The advisory lock key an upgrade holds on PostgreSQL (per database).
MIGRATION_LOCK = int.from_bytes(
    hashlib.sha256(b"loyalcast schema upgrade").digest()[:8], "big", signed=True
)
_POLL_SECONDS = 0.5


def alembic_config(engine: Engine) -> Config:
    """An Alembic ``Config`` that runs on ``engine`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


@contextlib.contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the database's upgrade lock (PostgreSQL; nothing elsewhere) while inside."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        take = text("SELECT pg_try_advisory_lock(:key)").bindparams(key=MIGRATION_LOCK)
        waited = False
        while not conn.scalar(take):
            if not waited:
                logger.info("waiting for another process's schema upgrade to finish")
                waited = True
            time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)").bindparams(key=MIGRATION_LOCK))


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema on ``engine`` up to ``revision``; safe to run again, and at once."""
    with migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` before the first upgrade."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
