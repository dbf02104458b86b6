"""Engines and sessions for SQLite (the embedded default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout, so a reader streaming while
another connection writes neither blocks nor fails. Every SQLite transaction
starts with ``BEGIN IMMEDIATE``: it takes the write lock up front and waits
for it (busy timeout) instead of failing with ``SQLITE_BUSY`` when a read
transaction later tries to write. Concurrency on SQLite is therefore one
writer at a time, which is what the embedded default is for; PostgreSQL is
the engine at scale.

PostgreSQL sessions run in UTC (``SET TIME ZONE 'UTC'`` on connect): every
instant loyalcast stores is UTC, so anything the server derives from one
(a ``::date``, a ``date_trunc``) means the same on every server, and psycopg
hands back instants already in ``datetime.UTC``, which
:class:`store.models.UTCDateTime` then passes through without converting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Insert

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "affected_rows",
    "insert_ignore",
    "make_engine",
    "make_sessionmaker",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with loyalcast's connection settings.

    SQLite files get their parent folder created, WAL, a busy timeout,
    foreign keys on and ``BEGIN IMMEDIATE`` transactions.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "postgresql":
        _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # A SET in the connection's first transaction would be undone by its
        # rollback, so it is committed on its own. (PgBouncer replays TimeZone
        # on every server connection it hands this client.)
        cursor = dbapi_connection.cursor()
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.close()
        dbapi_connection.commit()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def affected_rows(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed (``rowcount`` of its cursor result)."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"not the result of a DML statement: {result!r}")
    return int(result.rowcount)


def insert_ignore(
    dialect_name: str,
    table: Any,
    rows: Sequence[Mapping[str, Any]] | None = None,
    conflict_columns: Iterable[str] | None = None,
) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for SQLite and PostgreSQL alike.

    Args:
        dialect_name: ``"sqlite"`` or ``"postgresql"`` (``session.bind.dialect.name``).
        table: a mapped class or ``Table``.
        rows: values for a multi-row insert; ``None`` to add ``.values()`` or
            ``.from_select()`` later.
        conflict_columns: the unique index to ignore conflicts on; all unique
            indexes when ``None``.
    """
    module: Any = postgresql if dialect_name == "postgresql" else sqlite
    if dialect_name not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database dialect {dialect_name!r}")
    stmt = module.insert(table)
    if rows is not None:
        stmt = stmt.values(list(rows))
    index = list(conflict_columns) if conflict_columns is not None else None
    return stmt.on_conflict_do_nothing(index_elements=index)  # type: ignore[no-any-return]
