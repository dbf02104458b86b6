"""``loyalcast demo``: a broadcast from campaign file to sent messages, on the real engines.

It seeds members into a fresh SQLite file, creates the winter-double-points
broadcast (due now), starts a private redis-server, dramatiq workers and a
scheduler, shows progress until the run completes, prints the ledger's
counts and the outbox files, checks that the two agree, and stops every
process it started, on success, on error and on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from channels import read_outbox
from loyalcast.embedded import Embedded, channel_lines
from loyalcast.settings import Settings
from scheduler import SchedulerService
from store import CampaignRun, Delivery, DeliveryStatus, RunStatus, make_engine, make_sessionmaker
from store import upgrade as upgrade_schema
from workers import close_broker, make_broker
from workers.catalog import campaign_status, create_campaign
from workers.runtime import program_for

from .seed import seed_members

__all__ = ["CAMPAIGN_FILE", "demo_settings", "run_demo"]

CAMPAIGN_FILE = Path(__file__).parent / "winter-double-points.yaml"
POLICY_FILE = Path(__file__).parent / "policy.yaml"


def demo_settings(settings: Settings) -> Settings:
    """The demo's own settings: a fresh folder, its own SQLite file, a private Redis, fast ticks.

    Every channel is in outbox mode whatever credentials the environment holds:
    the demo's members are invented and must never be texted or mailed.
    """
    return dataclasses.replace(
        settings,
        data_dir=(settings.data_dir / "demo").resolve(),
        database_url=None,
        redis_url=None,
        outbox_dir=None,
        tick_seconds=1.0,
        sweep_seconds=5.0,
        policy_file=POLICY_FILE,
        twilio_account_sid=None,
        twilio_auth_token=None,
        sendgrid_api_key=None,
        google_application_credentials=None,
        vapid_private_key=None,
        direct_mail_dir=None,
        direct_mail_sftp_url=None,
    )


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def run_demo(
    settings: Settings, *, members: int, seed: int, timeout: float, console: Console
) -> bool:
    """Run the demo; True when every message went out and the outbox matches the ledger."""
    s = demo_settings(settings)
    shutil.rmtree(s.data_dir, ignore_errors=True)
    s.data_dir.mkdir(parents=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        engine = make_engine(s.effective_database_url)
        upgrade_schema(engine)
        sessions = make_sessionmaker(engine)
        with _progress(console) as progress:
            task = progress.add_task("seeding members", total=members)
            seed_members(
                engine, members, seed=seed, progress=lambda n: progress.update(task, completed=n)
            )
        created = create_campaign(sessions, CAMPAIGN_FILE, program=program_for(s))
        console.print(f"campaign [bold]{created.name}[/] created, run {created.run_id} due now")
        console.print(f"database: {s.effective_database_url}")
        for line in channel_lines(s):
            console.print(f"  {line}", markup=False)
        with Embedded(s, log_file=s.data_dir / "workers.log") as embedded:
            console.print(
                f"private Redis: {embedded.redis_url}; workers pid {embedded.workers.pid}"  # type: ignore[union-attr]
                f" (log: {s.data_dir / 'workers.log'})"
            )
            finished = _watch(
                s, sessions, embedded.redis_url, created.run_id or 0, timeout, console
            )
        engine.dispose()
        if not finished:
            console.print(f"[red]the run did not complete within {timeout:.0f} s[/]")
            return False
        return _summary(s, sessions, created.name, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; every process the demo started has been stopped[/]")
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _watch(
    s: Settings, sessions: Any, redis_url: str, run_id: int, timeout: float, console: Console
) -> bool:
    broker = make_broker(s, redis_url)
    client = redis.Redis.from_url(redis_url)
    service = SchedulerService(s, sessions, broker, client)
    thread = threading.Thread(target=service.run, name="scheduler", daemon=True)
    thread.start()
    final = [st for st in DeliveryStatus if st.is_final]
    try:
        with _progress(console) as progress:
            task = progress.add_task("delivering", total=None)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with sessions() as session:
                    run = session.get(CampaignRun, run_id)
                    done = (
                        session.scalar(
                            select(func.count()).where(
                                Delivery.run_id == run_id, Delivery.status.in_(final)
                            )
                        )
                        or 0
                    )
                status = run.status if run else "missing"
                planned = run.planned_count if run else 0
                total = planned if status in (RunStatus.PLANNED, RunStatus.COMPLETED) else None
                progress.update(
                    task, completed=done, total=total, description=f"run {run_id}: {status}"
                )
                if status == RunStatus.COMPLETED:
                    return True
                time.sleep(0.25)
            return False
    finally:
        service.stop()
        thread.join(timeout=30)
        close_broker(broker)
        client.close()


def _summary(s: Settings, sessions: Any, name: str, console: Console) -> bool:
    report = campaign_status(sessions, name)
    table = Table("status", "reason", "deliveries", title=f"{name}: the ledger")
    for status, reason, n in report.counts:
        table.add_row(status, reason or "", str(n))
    table.add_row("[bold]total[/]", "", str(report.total))
    console.print(table)
    with sessions() as session:
        sent = Counter(
            dict(
                session.execute(
                    select(Delivery.channel, func.count())
                    .where(Delivery.status == DeliveryStatus.SENT)
                    .group_by(Delivery.channel)
                ).all()
            )
        )
    ok = True
    outbox = s.effective_outbox_dir
    for channel in ("push", "email", "sms"):
        lines = read_outbox(outbox, channel)
        ids = Counter(line["delivery_id"] for line in lines)
        twice = sum(1 for n in ids.values() if n > 1)
        match = len(ids) == sent.get(channel, 0) and twice == 0
        ok &= match
        mark = "[green]matches the ledger[/]" if match else "[red]does NOT match the ledger[/]"
        console.print(f"  {outbox / (channel + '.jsonl')}: {len(lines)} messages, {mark}")
    console.print("[bold green]demo complete[/]" if ok else "[bold red]demo found a mismatch[/]")
    return ok
