"""The world one benchmark invocation runs in, made fresh and taken down afterwards.

:class:`BenchEnv` creates a PostgreSQL database of its own on the server named
by ``--database-url`` (``loyalcast_bench_<hex>``), migrates it and fills it
with :func:`loyalcast.demo.seed.seed_members` (COPY), and gives every Redis
key it writes a private prefix (``lcbench-<hex>``). Leaving the ``with`` block
drops the database (unless ``--keep``) and deletes the prefix's keys, on
success and on error alike. ``--reuse`` instead runs on an existing database
that an earlier ``--keep`` run seeded, so a million members are loaded once.

The settings every loyalcast process of the run shares are built here:
provider rate limits raised far above what the fakes can take (so the token
bucket is not what is measured), long leases (so the sweeper never re-sends
during a run), and a policy file with no quiet hours and no caps unless a
scenario asks for them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import redis
from rich.console import Console
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from channels.fakes.sendgrid import DEFAULT_API_KEY
from channels.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, DEFAULT_NUMBER
from loyalcast.demo.seed import seed_members
from loyalcast.embedded import child_env
from loyalcast.settings import Settings
from segments import audience_filter, parse_rule
from store import Member, make_engine, make_sessionmaker, upgrade

__all__ = ["BENCH_DIR", "REPO_ROOT", "BenchEnv", "BenchOptions", "database_on"]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: Provider requests per second allowed by the token buckets: far above any fake's pace.
UNLIMITED_RATE = 1_000_000.0
PUBLIC_URL = "https://loyalty.example"
#: A fixed key, so the unsubscribe links of ours and of the baselines are the same bytes.
SECRET_KEY = "bench-secret-key-not-for-production"  # noqa: S105 - a benchmark's own key
OPEN_POLICY = "default_time_zone: UTC\nquiet_hours: {sms: null}\n"


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What the command line asked for."""

    members: int
    database_url: str
    redis_url: str
    keep: bool = False
    reuse: bool = False
    processes: int = 2
    threads: int = 4
    batch_size: int = 1000
    validate_every: int = 100
    baseline_limit: int = 20_000
    repeat: int = 3
    seed: int = 7
    timeout: float = 0.0
    """Seconds a run may take before it is declared stuck; 0: 300 s plus 50 ms per member."""

    @property
    def run_timeout(self) -> float:
        return self.timeout or 300.0 + self.members * 0.05


def database_on(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name``."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _psycopg_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        return "postgresql+psycopg" + url[len(scheme) :]
    return url


class BenchEnv:
    """A fresh, seeded PostgreSQL database and a private Redis prefix (a context manager)."""

    def __init__(self, options: BenchOptions, console: Console) -> None:
        url = _psycopg_url(options.database_url)
        if not url.startswith("postgresql+psycopg"):
            raise ValueError(
                f"--database-url must be a PostgreSQL URL (the benchmarks measure the engine"
                f" at scale), not {options.database_url!r}"
            )
        self.options = options
        self.console = console
        self.token = uuid.uuid4().hex[:10]
        self.server_url = url
        self.database_name = (
            urlsplit(url).path.lstrip("/") if options.reuse else f"loyalcast_bench_{self.token}"
        )
        self.database_url = url if options.reuse else database_on(url, self.database_name)
        self.namespace = f"lcbench-{self.token}"
        self.work_dir = Path(tempfile.mkdtemp(prefix="lcbench-"))
        self.policy_file = self.work_dir / "policy-open.yaml"
        self.policy_file.write_text(OPEN_POLICY)
        self.seed_seconds = 0.0
        self.members = 0
        self._engine: Engine | None = None
        self._created = False
        self._checkpoint_noted = False

    # --- lifecycle ------------------------------------------------------------

    def __enter__(self) -> BenchEnv:
        try:
            self._setup()
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(failed=exc is not None)

    def _setup(self) -> None:
        if not self.options.reuse:
            admin = make_engine(self.server_url, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{self.database_name}"')
            finally:
                admin.dispose()
            self._created = True
        upgrade(self.engine)
        with self.engine.connect() as conn:
            existing = int(conn.scalar(select(func.count()).select_from(Member)) or 0)
        if self.options.reuse:
            if existing < self.options.members:
                raise ValueError(
                    f"--reuse: {self.database_name} holds {existing:,} members, fewer than"
                    f" --members {self.options.members:,}"
                )
            self.members = existing
            self.console.print(f"reusing {self.database_name}: {existing:,} members")
            return
        started = time.perf_counter()
        seed_members(self.engine, self.options.members, seed=self.options.seed)
        self.seed_seconds = time.perf_counter() - started
        self.members = self.options.members
        # A live database is vacuumed by autovacuum; freshly COPYed tables are not yet, and
        # without a visibility map PostgreSQL cannot use index-only scans at all.
        self.vacuum()
        self.console.print(
            f"seeded {self.members:,} members into {self.database_name}"
            f" in {self.seed_seconds:.1f} s ({self.members / self.seed_seconds:,.0f} members/s)"
        )

    def vacuum(self, table: str = "") -> None:
        """``VACUUM ANALYZE`` (one table, or all), then a checkpoint, so no run pays for it.

        Without the checkpoint, the pages the seeding or the vacuum dirtied are
        written out by the checkpointer during whichever run comes next, and
        counted in that run's database CPU. It needs superuser or the
        ``pg_checkpoint`` role; without them it is skipped.
        """
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {table}".strip())
            try:
                conn.exec_driver_sql("CHECKPOINT")
            except DBAPIError as exc:
                if not self._checkpoint_noted:
                    self._checkpoint_noted = True
                    self.console.print(f"note: no CHECKPOINT after VACUUM: {exc.orig}")

    def close(self, *, failed: bool = False) -> None:
        """Drop the database (unless kept or reused) and the Redis keys; safe to call twice.

        The work folder (campaign files, worker logs) is removed too, unless the
        run failed or ``--keep`` was given: then its path is printed.
        """
        if failed or self.options.keep:
            self.console.print(f"worker logs and campaign files: {self.work_dir}")
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        client = redis.Redis.from_url(self.options.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{self.namespace}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
        if self._created and not self.options.keep:
            admin = make_engine(self.server_url, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(
                        f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)'
                    )
            finally:
                admin.dispose()
            self._created = False
        elif self._created:
            self.console.print(f"kept the database: {self.database_url}")

    # --- what scenarios use ---------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    def settings(self, **overrides: Any) -> Settings:
        """The settings of every loyalcast process of this run (see the module docstring)."""
        base = Settings(
            data_dir=self.work_dir / "data",
            database_url=self.database_url,
            redis_url=self.options.redis_url,
            queue_namespace=self.namespace,
            outbox_dir=self.work_dir / "outbox",
            batch_size=self.options.batch_size,
            lease_seconds=3600.0,
            sweep_seconds=3600.0,
            worker_processes=self.options.processes,
            worker_threads=self.options.threads,
            policy_file=self.policy_file,
            log_level="WARNING",
            public_url=PUBLIC_URL,
            secret_key=SECRET_KEY,
            twilio_rate=UNLIMITED_RATE,
            sendgrid_rate=UNLIMITED_RATE,
            fcm_rate=UNLIMITED_RATE,
            webpush_rate=UNLIMITED_RATE,
        )
        return dataclasses.replace(base, **overrides)

    def provider_settings(
        self, *, twilio_url: str, sendgrid_url: str, **overrides: Any
    ) -> Settings:
        """:meth:`settings` with Twilio and SendGrid live, pointed at the fakes."""
        return self.settings(
            twilio_account_sid=DEFAULT_ACCOUNT_SID,
            twilio_auth_token=DEFAULT_AUTH_TOKEN,
            twilio_from_number=DEFAULT_NUMBER,
            twilio_base_url=twilio_url,
            sendgrid_api_key=DEFAULT_API_KEY,
            sendgrid_from_email="rewards@loyalty.example",
            sendgrid_api_host=sendgrid_url,
            **overrides,
        )

    def child_env(self, settings: Settings) -> dict[str, str]:
        """The environment of a worker process with exactly ``settings``."""
        env = child_env(settings, settings.redis_url or self.options.redis_url)
        # The naive baseline's worker module lives in bench/, which is not installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        return env

    def audience(self, limit: int, segment: object = None) -> list[int]:
        """The first ``limit`` members of a campaign's audience (``segment``), in id order."""
        rule = parse_rule(segment, "segment") if segment is not None else None
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Member.id).where(audience_filter(rule)).order_by(Member.id).limit(limit)
                )
            )

    def log_file(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    def machine(self) -> dict[str, Any]:
        """What the figures were measured on."""
        memory = psutil.virtual_memory().total
        with self.engine.connect() as conn:
            postgres = str(conn.exec_driver_sql("SELECT version()").scalar())
            autovacuum = str(conn.exec_driver_sql("SHOW autovacuum").scalar())
        client = redis.Redis.from_url(self.options.redis_url)
        try:
            redis_version = str(client.info("server").get("redis_version"))
        finally:
            client.close()
        return {
            "cpu": _cpu_model(),
            "logical_cpus": psutil.cpu_count(),
            "memory_gib": round(memory / 2**30, 1),
            "system": f"{platform.system()} {platform.release()}",
            "python": sys.version.split()[0],
            "postgresql": postgres.split(" on ")[0],
            "postgresql_autovacuum": autovacuum,
            "redis": redis_version,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
