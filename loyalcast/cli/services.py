"""Running loyalcast: its settings, its database schema, and the processes that send.

``settings``, ``db upgrade``, ``worker``, ``scheduler``, ``run``, ``api`` and ``demo``.

:data:`app` holds root-level commands (merged into ``loyalcast`` itself);
:data:`db_app` is the ``loyalcast db`` group.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer
from rich.table import Table

from loyalcast.cli._common import (
    console,
    errors,
    fail,
    load_settings,
    make_sessions,
    print_channels,
    warn_rules_not_allowed,
)
from loyalcast.settings import Settings, redact_url

app = typer.Typer()
#: The options sizing the worker pool, for ``worker`` and ``run``.
Processes = Annotated[int | None, typer.Option(help="Worker processes.")]
Threads = Annotated[int | None, typer.Option(help="Threads per process.")]
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)


@app.command("settings")
def show_settings() -> None:
    """List every environment variable loyalcast reads, with its default and current value."""
    settings = load_settings()
    table = Table("variable", "current", "default", "meaning")
    current = settings.to_env()
    secret = Settings.secret_variables()
    for env, default, doc in Settings.documented():
        value = current.get(env, "")
        if value and env in secret:
            value = "***"
        elif "URL" in env:
            value = redact_url(value)
        table.add_row(env, value, default, doc)
    console.print(table)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the latest version (safe to repeat)."""
    from store import current_revision, make_engine, upgrade

    settings = load_settings()
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    console.print(
        f"database {redact_url(settings.effective_database_url)} "
        f"at revision {current_revision(engine)}"
    )


@app.command()
def worker(
    processes: Processes = None,
    threads: Threads = None,
) -> None:
    """Run dramatiq workers for plan, deliver, sweep and enroll jobs (needs LOYALCAST_REDIS_URL)."""
    from workers.jobs import QUEUES

    settings = load_settings()
    if not settings.redis_url:
        fail(
            "LOYALCAST_REDIS_URL is not set: workers and the scheduler must share one Redis. "
            "On one machine, `loyalcast run` starts a private Redis with both.",
            code=2,
        )
    console.print(
        f"workers on {redact_url(settings.redis_url)}, "
        f"database {redact_url(settings.effective_database_url)}"
    )
    print_channels(settings)
    warn_rules_not_allowed(settings)
    sys.stdout.flush()
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "workers.main",
        "--processes",
        str(processes or settings.worker_processes),
        "--threads",
        str(threads or settings.worker_threads),
        "--queues",
        *QUEUES,
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with dramatiq's CLI


@app.command()
def scheduler() -> None:
    """Run a scheduler: it leads while it holds the lock, else stands by.

    Needs LOYALCAST_REDIS_URL; run as many as you like, one leads.
    """
    settings = load_settings()
    if not settings.redis_url:
        fail(
            "LOYALCAST_REDIS_URL is not set: workers and the scheduler must share one Redis. "
            "On one machine, `loyalcast run` starts a private Redis with both.",
            code=2,
        )
    run_scheduler(settings, settings.redis_url)


def run_scheduler(settings: Settings, redis_url: str) -> None:
    """Run a SchedulerService in this process until SIGINT or SIGTERM."""
    import redis

    from scheduler import SchedulerService
    from workers import close_broker, make_broker

    sessions = make_sessions(settings)
    broker = make_broker(settings, redis_url)
    client = redis.Redis.from_url(redis_url)
    service = SchedulerService(
        settings,
        sessions,
        broker,
        client,
        on_change=lambda role: console.print(f"scheduler: {role}"),
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop())
    console.print("scheduler: standing by for the leader lock")
    try:
        service.run()
    finally:
        close_broker(broker)
        client.close()


@app.command()
def run(
    processes: Processes = None,
    threads: Threads = None,
) -> None:
    """Run it all on one machine: workers, a scheduler and, unless configured, a private Redis."""
    from loyalcast.embedded import Embedded

    settings = load_settings()
    with Embedded(settings, processes=processes, threads=threads) as embedded:
        console.print(f"running on {redact_url(embedded.redis_url)}; Ctrl-C stops")
        print_channels(settings)
        warn_rules_not_allowed(settings)
        run_scheduler(settings, embedded.redis_url)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API: provider webhooks, inbound SMS, unsubscribe links, campaigns.

    Providers and members reach it at LOYALCAST_PUBLIC_URL (put a TLS-terminating
    proxy in front); webhook signatures are checked against that URL.
    """
    import uvicorn

    from api import create_app

    settings = load_settings()
    sessions = make_sessions(settings)
    print_channels(settings)
    if not settings.public_url:
        errors.print(
            "warning: LOYALCAST_PUBLIC_URL is not set: Twilio signatures cannot be "
            "checked and emails carry no unsubscribe link",
            markup=False,
        )
    uvicorn.run(create_app(settings, sessions), host=host, port=port, log_level="warning")


@app.command()
def demo(
    members: Annotated[int, typer.Option(help="How many members to seed.", min=10)] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed for the members.")] = 7,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
) -> None:
    """Seed members, broadcast to a segment, and show every message going out.

    Uses a fresh SQLite file and outbox under <data dir>/demo and a private
    redis-server, whatever LOYALCAST_DATABASE_URL and LOYALCAST_REDIS_URL say;
    stops every process it started, on success, error or Ctrl-C.
    """
    from loyalcast.demo import run_demo

    settings = load_settings()
    ok = run_demo(settings, members=members, seed=seed, timeout=timeout, console=console)
    if not ok:
        raise typer.Exit(1)
