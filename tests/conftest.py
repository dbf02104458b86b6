"""Shared fixtures: real SQLite and PostgreSQL engines, a real Redis.

A test that needs a server it cannot reach is skipped with a message saying
how to start it; under ``CI=true`` the same situation fails the test instead,
so CI can never go green by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from store.engine import make_engine
from store.migrate import upgrade
from store.models import Base

#: Fixtures kept in their own modules: a real OpenSSH server, real loyalcast processes.
pytest_plugins = ["tests.sftp_server", "tests.process_fixtures"]

PG_ADMIN_URL = os.environ.get(
    "LOYALCAST_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("LOYALCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, host: str, port: int, how: str) -> None:
    """Skip (laptop) or fail (CI) when ``host:port`` does not accept connections."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc}); {how}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def require_postgres() -> None:
    require_service(
        "PostgreSQL", "127.0.0.1", 5432, "start it (trust auth) to run the PostgreSQL tests"
    )


def require_redis() -> None:
    require_service("Redis", "127.0.0.1", 6379, "start redis-server to run the broker tests")


@pytest.fixture(scope="session")
def provider_specs() -> None:
    """The providers' pinned OpenAPI specs, fetched once (npm) and cached; skip or fail without."""
    from channels.fakes.specs import PINNED, SpecUnavailable, spec_path

    try:
        for name in PINNED:
            spec_path(name)
    except SpecUnavailable as exc:
        message = f"the providers' OpenAPI specs are not available: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def own_pg_database() -> Iterator[str]:
    """The URL of a new migrated PostgreSQL database, dropped on exit (skips or fails without)."""
    require_postgres()
    name = f"loyalcast_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, migrated, dropped at the end."""
    with own_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once is faster)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


def _truncate_all(engine: Engine) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """The URL of a fresh, migrated SQLite database file."""
    path = tmp_path / "loyalcast.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def pg_url(pg_database_url: str) -> str:
    """The URL of the session's PostgreSQL database, emptied for this test."""
    engine = make_engine(pg_database_url)
    _truncate_all(engine)
    engine.dispose()
    return pg_database_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh migrated database: each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh migrated database, SQLite and PostgreSQL in turn."""
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def redis_url() -> str:
    """The URL of the real Redis on 127.0.0.1:6379 (skips or fails if it is down)."""
    require_redis()
    return REDIS_TEST_URL


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    namespace = f"lctest-{uuid.uuid4().hex[:10]}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
