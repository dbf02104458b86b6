"""The ``loyalcast`` command line.

Every command reads its configuration from the environment once, through
:class:`loyalcast.settings.Settings`; a malformed variable stops it with a
message naming the variable (exit code 2). ``loyalcast settings`` lists them.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from loyalcast.logging import configure_logging
from loyalcast.settings import Settings, SettingsError, redact_url

__all__ = ["app", "main"]

app = typer.Typer(
    help="loyalcast sends a loyalty program's messages: reminders, welcomes, broadcasts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
members_app = typer.Typer(help="Members and their data.", no_args_is_help=True)
campaigns_app = typer.Typer(help="Campaign files, versions and progress.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(members_app, name="members")
app.add_typer(campaigns_app, name="campaigns")
segments_app = typer.Typer(help="Saved audiences: save, preview, snapshot.", no_args_is_help=True)
deliveries_app = typer.Typer(help="The delivery ledger.", no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(segments_app, name="segments")

console = Console(stderr=False, highlight=False)
errors = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    errors.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """The settings from the environment, or exit 2 naming the bad variable.

    The program policy file (LOYALCAST_POLICY_FILE) is validated here too, so a
    mistake in it stops every command at start with its line and key.
    """
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        fail(f"configuration: {exc}", code=2)
    configure_logging(settings.log_level)
    load_program(settings)
    return settings


def load_program(settings: Settings) -> Any:
    """The program policy in force, or exit 2 naming the file, line and key at fault."""
    from workers.program import ProgramFileError
    from workers.runtime import program_for

    try:
        return program_for(settings)
    except (ProgramFileError, OSError) as exc:
        fail(f"policy file refused:\n{exc}", code=2)


def _sessions(settings: Settings, upgrade: bool = True) -> Any:
    from store import make_engine, make_sessionmaker
    from store import upgrade as upgrade_schema

    engine = make_engine(settings.effective_database_url)
    if upgrade:
        upgrade_schema(engine)
    return make_sessionmaker(engine)


def print_channels(settings: Settings) -> None:
    """Say which channels are live and which write to the outbox."""
    from loyalcast.embedded import channel_lines

    for line in channel_lines(settings):
        console.print(f"  {line}", markup=False)


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


@members_app.command("import")
def members_import(
    file: Annotated[Path, typer.Argument(help="A .csv (with header) or .jsonl file of members.")],
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Write the good rows and report the bad ones. Default: all-or-nothing, "
            "where one bad row means nothing is written.",
        ),
    ] = False,
    region: Annotated[
        str | None,
        typer.Option(
            help="Country for phone numbers without +code (default LOYALCAST_DEFAULT_REGION)."
        ),
    ] = None,
    no_enroll: Annotated[
        bool,
        typer.Option(
            "--no-enroll",
            help="Do not start welcome sequences for the members this import creates "
            "(use it to load an existing member base).",
        ),
    ] = False,
) -> None:
    """Import or update members (upsert on external_id).

    Every row is validated whole before any of it is written; a bad row is
    reported with its line number and field. All-or-nothing by default.
    Members the import creates (not the ones it updates) are enrolled in the
    active welcome sequences unless --no-enroll is given.
    """
    from rich.progress import Progress

    from store import MemberImportError, import_members, make_engine, upgrade

    settings = load_settings()
    if not file.exists():
        fail(f"{file}: no such file")
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task(f"importing {file.name}", total=None)
        try:
            report = import_members(
                engine,
                file,
                mode="skip-bad" if skip_bad else "all-or-nothing",
                default_region=region or settings.default_region,
                progress=lambda n: progress.update(task, completed=n),
            )
        except MemberImportError as exc:
            fail(str(exc))
    for error in report.errors:
        errors.print(str(error), markup=False, soft_wrap=True)
    console.print(
        f"{report.rows} rows: {report.inserted} inserted, {report.updated} updated, "
        f"{report.skipped} skipped, {len(report.errors)} with errors"
    )
    if report.created_ids and not no_enroll:
        _enroll_and_report(settings, report.created_ids, source="import")
    if report.errors and not skip_bad:
        fail("nothing was written (all-or-nothing); fix the rows above or use --skip-bad")
    if report.errors:
        raise typer.Exit(1)


@members_app.command("enroll")
def members_enroll(
    external_ids: Annotated[
        list[str], typer.Argument(help="The members' external ids.", show_default=False)
    ],
    campaign: Annotated[
        str | None,
        typer.Option(help="Only this welcome sequence (default: every active one)."),
    ] = None,
) -> None:
    """Start welcome sequences for members, as an enrollment event would.

    A member already in a sequence gets nothing new; one whose sequence ended
    starts it again only if the campaign says `restart: true`. An unknown
    external id stops the command before anyone is enrolled.
    """
    from workers.sequences import CampaignNotEnrollable, UnknownCampaign, UnknownMembers

    settings = load_settings()
    try:
        _enroll_and_report(settings, external_ids, source="cli", campaign=campaign)
    except (UnknownMembers, UnknownCampaign, CampaignNotEnrollable) as exc:
        fail(f"{exc}; nobody was enrolled")


def _enroll_and_report(
    settings: Settings, members: Any, *, source: str, campaign: str | None = None
) -> None:
    """Enroll ``members`` and print who started which sequence and who did not, and why."""
    from collections import Counter

    from workers import close_broker, make_broker
    from workers.sequences import enroll

    broker = make_broker(settings) if settings.redis_url else None
    try:
        result = enroll(
            _sessions(settings),
            members,
            source=source,
            campaign=campaign,
            broker=broker,
            attributes=load_program(settings).attributes,
        )
    finally:
        if broker is not None:
            close_broker(broker)
    per_campaign = Counter(e.campaign for e in result.enrolled)
    for name, n in sorted(per_campaign.items()):
        console.print(f"{n} members enrolled in {name}")
    reasons = Counter((s.campaign, s.reason) for s in result.skipped)
    for (name, reason), n in sorted(reasons.items()):
        console.print(f"{n} members not enrolled in {name}: {reason.replace('_', ' ')}")
    if not result.enrolled and not result.skipped:
        console.print("no active welcome sequence: nobody was enrolled")


@members_app.command("why")
def members_why(
    member: Annotated[str, typer.Argument(help="The member's external id.")],
    campaign: Annotated[str | None, typer.Option(help="Only this campaign's deliveries.")] = None,
    limit: Annotated[int, typer.Option(help="How many recent deliveries.", min=1)] = 20,
) -> None:
    """Show a member's consents and recent deliveries, each with why it was or was not sent."""
    from workers.history import member_history

    settings = load_settings()
    sessions = _sessions(settings)
    try:
        history = member_history(sessions, member, campaign=campaign, limit=limit)
    except LookupError as exc:
        fail(str(exc))
    zone = history.time_zone or f"{settings.default_time_zone} (program default)"
    console.print(f"[bold]{history.external_id}[/] {history.name or ''} — time zone {zone}")
    consents = Table("channel", "consent", "since", "source", title="consent")
    for line in history.consents:
        consents.add_row(
            line.channel, line.status, f"{line.updated_at:%Y-%m-%d %H:%M}Z", line.source
        )
    console.print(consents)
    table = Table("created", "campaign", "channel", "status", "why", title="deliveries")
    for d in history.deliveries:
        why = ": ".join(part for part in (d.reason, d.detail) if part)
        if d.status == "deferred" and d.not_before is not None:
            why = f"{why} (until {d.not_before:%Y-%m-%d %H:%M}Z)"
        table.add_row(f"{d.created_at:%Y-%m-%d %H:%M}Z", d.campaign, d.channel or "", d.status, why)
    console.print(table)


@segments_app.command("save")
def segments_save(
    file: Annotated[Path, typer.Argument(help="A segment file (YAML: name, description, rule).")],
) -> None:
    """Check a segment file and save it; campaigns can then say `segment: <name>`."""
    from segments import save_segment
    from workers.segment_files import SegmentFileError, parse_segment_file

    settings = load_settings()
    program = load_program(settings)
    try:
        parsed = parse_segment_file(file, attributes=program.attributes)
    except SegmentFileError as exc:
        fail(f"segment refused:\n{exc}")
    sessions = _sessions(settings)
    with sessions.begin() as session:
        save_segment(
            session,
            parsed.name,
            parsed.rule_data,
            attributes=program.attributes,
            description=parsed.description,
        )
    console.print(f"segment {parsed.name} saved")


@segments_app.command("preview")
def segments_preview(
    what: Annotated[str, typer.Argument(help="A segment file, or the name of a saved segment.")],
    sample: Annotated[int, typer.Option(help="How many members to show.", min=0)] = 10,
) -> None:
    """How many members a segment selects now, a sample of them, and the query's cost."""
    from segments import load_segment, preview
    from workers.segment_files import SegmentFileError, parse_segment_file

    settings = load_settings()
    program = load_program(settings)
    sessions = _sessions(settings)
    with sessions() as session:
        if Path(what).exists():
            try:
                rule = parse_segment_file(Path(what), attributes=program.attributes).rule
            except SegmentFileError as exc:
                fail(f"segment refused:\n{exc}")
        else:
            try:
                _, rule = load_segment(session, what, attributes=program.attributes)
            except LookupError as exc:
                fail(f"{exc} (and no file {what!r})")
        result = preview(session, rule, sample=sample)
    console.print(f"[bold]{result.count}[/] members match")
    table = Table("id", "external id", "name", title="sample")
    for member_id, external_id, name in result.sample_members:
        table.add_row(str(member_id), external_id, name or "")
    console.print(table)
    console.print("query plan:", markup=False)
    console.print(result.cost or "(not available)", markup=False)


@segments_app.command("snapshot")
def segments_snapshot(
    name: Annotated[str, typer.Argument(help="A saved segment's name.")],
) -> None:
    """Evaluate a saved segment now and say who entered and who left since the last time.

    Triggered campaigns watching the segment are triggered by it (their own
    ticks would have taken the same snapshot).
    """
    from segments import load_segment
    from workers.triggers import snapshot_and_trigger

    settings = load_settings()
    sessions = _sessions(settings)
    with sessions.begin() as session:
        try:
            segment, _ = load_segment(session, name)
        except LookupError as exc:
            fail(str(exc))
        result = snapshot_and_trigger(session, segment)
    diff = result.diff
    console.print(
        f"{name}: {diff.count} members; {len(diff.entered)} entered, {len(diff.left)} left"
    )
    for campaign, run_id in result.runs.items():
        console.print(f"triggered campaign {campaign}: run {run_id}")
    for campaign in result.baseline:
        console.print(f"triggered campaign {campaign}: baseline taken (nobody entered yet)")


@campaigns_app.command("create")
def campaigns_create(
    file: Annotated[Path, typer.Argument(help="The campaign file (YAML).")],
    templates: Annotated[
        list[Path] | None,
        typer.Option(
            "--templates",
            help="Folder of template folders (repeatable); "
            "<file's folder>/templates and the built-ins are searched too.",
        ),
    ] = None,
) -> None:
    """Validate a campaign file, render its templates for sample members, and schedule it.

    Nothing is stored when the file, a template or a sample render is wrong;
    the error names the line and key, or the template and its line.
    """
    from workers import CampaignFileError
    from workers.catalog import create_campaign

    settings = load_settings()
    sessions = _sessions(settings)
    try:
        created = create_campaign(
            sessions, file, template_path=templates or (), program=load_program(settings)
        )
    except CampaignFileError as exc:
        fail(f"campaign refused:\n{exc}")
    what = "created" if created.changed else "unchanged"
    if created.run_id is not None and created.due_at is not None:
        when = f"run {created.run_id} due {created.due_at:%Y-%m-%d %H:%M %Z}"
    else:
        when = _runs_to_come(file)
    console.print(f"campaign {created.name} {what} (version {created.version}); {when}")


def _runs_to_come(file: Path) -> str:
    """What the scheduler will do for a campaign whose runs come from its tick."""
    from store import utcnow
    from workers import parse_campaign
    from workers.recurrence import Recurrence
    from workers.schedules import format_duration

    spec = parse_campaign(file.read_text(encoding="utf-8"), str(file))
    if spec.schedule is not None and spec.schedule.recurring:
        recurrence = Recurrence(spec.schedule)
        wall = recurrence.next_after(utcnow())
        if wall is None:
            return "no occurrence left before `until`"
        where = "member-local" if spec.schedule.member_local else spec.schedule.timezone
        due = recurrence.due_at(wall)
        return f"next occurrence {wall:%Y-%m-%d %H:%M} {where}, due {due:%Y-%m-%d %H:%M}Z"
    if spec.trigger_segment is not None:
        every = format_duration(spec.snapshot_every)
        return f"watching segment {spec.trigger_segment} every {every}"
    if spec.kind == "welcome_sequence":
        return "steps are written as members enroll"
    if spec.kind == "expiry_reminder":
        return "the scheduler writes its runs, one each day"
    return "its runs come from the scheduler as they fall due"


@campaigns_app.command("status")
def campaigns_status(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Show a campaign's runs with progress and ETA, and its deliveries by status and reason."""
    from workers.catalog import campaign_status
    from workers.progress import provider_rates

    settings = load_settings()
    sessions = _sessions(settings)
    try:
        report = campaign_status(sessions, name, rates=provider_rates(settings))
    except LookupError as exc:
        fail(str(exc))
    console.print(f"[bold]{report.name}[/] version {report.version}, {report.status}")
    shown = len(report.runs)
    title = f"latest {shown} of {report.runs_total} runs" if report.runs_total > shown else None
    runs = Table(
        "run", "occurrence", "due", "status", "planned", "sent", "open", "ETA", title=title
    )
    for run in report.runs:
        runs.add_row(
            str(run["id"]),
            run["occurrence"],
            f"{run['due_at']:%Y-%m-%d %H:%M}Z",
            run["status"],
            str(run["planned"]),
            str(run["sent"]),
            _open_cell(run),
            _eta_cell(run),
        )
    console.print(runs)
    counts = Table("status", "reason", "deliveries")
    for status, reason, n in report.counts:
        counts.add_row(status, reason or "", str(n))
    counts.add_row("[bold]total[/]", "", str(report.total))
    console.print(counts)


def _open_cell(run: dict[str, Any]) -> str:
    if run["waiting"]:
        return f"{run['open']} ({run['waiting']} waiting)"
    return str(run["open"])


def _eta_cell(run: dict[str, Any]) -> str:
    """When a run should finish, and on what the estimate rests."""
    from store import utcnow
    from workers.schedules import format_duration

    eta = run["eta"]
    if eta is None:
        return "paused" if run["open"] else ""
    if run["eta_basis"] == "last row due":
        return f"{eta:%Y-%m-%d %H:%M}Z (last row due)"
    remaining = max(eta - utcnow(), timedelta(0))
    rate = f"{run['rate']:.3g}/s {run['rate_source']}" if run["rate"] else "no rate limit"
    return f"{eta:%H:%M:%S}Z (in {format_duration(remaining)}, {rate})"


@campaigns_app.command("forecast")
def campaigns_forecast(
    file: Annotated[Path, typer.Argument(help="The campaign file (YAML).")],
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Plan the run at this instant (ISO 8601 with offset); "
            "default: when the schedule falls due.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the forecast as JSON.")] = False,
    templates: Annotated[
        list[Path] | None, typer.Option("--templates", help="Folder of template folders.")
    ] = None,
) -> None:
    """Forecast a campaign's run: audience, outcomes by reason, samples, ETA. Sends nothing.

    Every member is decided as the deliver job would decide at the moment the
    row would be sent (consent, reachability, quiet hours, frequency caps);
    nothing is written to the database or to Redis.
    """
    import json
    from datetime import datetime

    from workers import CampaignFileError, Runtime
    from workers.forecast import forecast

    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            fail(f"--at {at!r}: not an ISO 8601 instant, e.g. 2026-12-01T10:00:00+00:00", code=2)
        if when.utcoffset() is None:
            fail(f"--at {at!r}: give the UTC offset, e.g. {at}+00:00", code=2)
    settings = load_settings()
    _sessions(settings)
    runtime = Runtime(settings, program=load_program(settings))
    try:
        result = forecast(runtime, file, at=when, template_path=templates or ())
    except CampaignFileError as exc:
        fail(f"campaign refused:\n{exc}")
    finally:
        runtime.close()
    if as_json:
        console.print(json.dumps(result.to_dict(), indent=2), markup=False, soft_wrap=True)
        return
    from loyalcast.forecast_view import print_forecast

    print_forecast(console, result)


@campaigns_app.command("test-send")
def campaigns_test_send(
    file: Annotated[Path, typer.Argument(help="The campaign file (YAML).")],
    to: Annotated[str, typer.Option("--to", help="The member's external id.")],
    templates: Annotated[
        list[Path] | None, typer.Option("--templates", help="Folder of template folders.")
    ] = None,
    step: Annotated[
        int, typer.Option("--step", help="A welcome sequence's step (1 for the first).", min=1)
    ] = 1,
) -> None:
    """Render a campaign for one member and send it to them alone, marked [TEST].

    Outside frequency caps and quiet hours, not recorded in the ledger; consent
    and reachability still decide the channel.
    """
    from channels import DeliveryError
    from workers import CampaignFileError, Runtime
    from workers.trial_send import TrialRefused, send_trial

    settings = load_settings()
    _sessions(settings)
    runtime = Runtime(settings, program=load_program(settings))
    try:
        message, outcome = send_trial(
            runtime, file, to, template_path=templates or (), step=step - 1
        )
        mode = "live" if runtime.channels[message.channel].live else "outbox"
    except CampaignFileError as exc:
        fail(f"campaign refused:\n{exc}")
    except (LookupError, TrialRefused) as exc:
        fail(str(exc))
    finally:
        runtime.close()
    if isinstance(outcome, DeliveryError):
        fail(f"test send to {to} on {message.channel} failed: {outcome}")
    console.print(
        f"test send to {to} ({message.to}) on {message.channel} [{mode}]: "
        f"{outcome.provider_message_id}",
        markup=False,
    )


@deliveries_app.command("retry")
def deliveries_retry(
    campaign: Annotated[str, typer.Option(help="The campaign whose deliveries to retry.")],
    status: Annotated[
        str, typer.Option(help="Only 'failed' deliveries can be retried.")
    ] = "failed",
    reason: Annotated[
        str | None,
        typer.Option(help="Only those failed with this reason (e.g. retries_exhausted)."),
    ] = None,
) -> None:
    """Send a campaign's failed deliveries again, still once only (same rows, same keys).

    Only deliveries that never reached a provider are retried; ones a provider
    accepted and later reported undelivered went out once and are left alone.
    """
    from workers import close_broker, make_broker
    from workers.retry import retry_failed

    if status != "failed":
        fail("only --status failed can be retried (unknown deliveries may have been sent)")
    settings = load_settings()
    broker = make_broker(settings) if settings.redis_url else None
    try:
        result = retry_failed(_sessions(settings), campaign, reason=reason, broker=broker)
    except LookupError as exc:
        fail(str(exc))
    finally:
        if broker is not None:
            close_broker(broker)
    console.print(
        f"{result.reopened} failed deliveries of {campaign} will be sent again"
        + (
            f"; {result.left_alone} reported undelivered by a provider were left alone"
            if result.left_alone
            else ""
        )
    )


@campaigns_app.command("cancel")
def campaigns_cancel(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Cancel a campaign: returns once nothing more of it can be sent, on any worker."""
    from workers.control import cancel_campaign

    settings = load_settings()
    try:
        result = cancel_campaign(_sessions(settings), name, timeout=settings.lease_seconds)
    except LookupError as exc:
        fail(str(exc))
    console.print(
        f"campaign {name} cancelled: {result.suppressed} deliveries will not be sent"
        f" (waited {result.waited:.1f} s for sends already at a provider)"
    )
    if result.stranded:
        errors.print(
            f"warning: {result.stranded} deliveries were being sent by a worker that "
            "stopped; they end unknown",
            markup=False,
        )


@campaigns_app.command("pause")
def campaigns_pause(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Pause a campaign: nothing more is sent or planned until it is resumed."""
    from workers.control import pause_campaign

    settings = load_settings()
    try:
        waiting = pause_campaign(_sessions(settings), name)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    console.print(f"campaign {name} paused: {waiting} deliveries wait")


@campaigns_app.command("resume")
def campaigns_resume(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Resume a paused campaign: its waiting deliveries are due at once."""
    from workers import close_broker, make_broker
    from workers.control import resume_campaign

    settings = load_settings()
    broker = make_broker(settings) if settings.redis_url else None
    try:
        resumed = resume_campaign(_sessions(settings), name, broker)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    finally:
        if broker is not None:
            close_broker(broker)
    how = "enqueued" if broker is not None else "due (the scheduler's sweep enqueues them)"
    console.print(f"campaign {name} resumed: {resumed} deliveries {how}")


@app.command()
def worker(
    processes: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads per process.")] = None,
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

    sessions = _sessions(settings)
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
    processes: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads per process.")] = None,
) -> None:
    """Run it all on one machine: workers, a scheduler and, unless configured, a private Redis."""
    from loyalcast.embedded import Embedded

    settings = load_settings()
    with Embedded(settings, processes=processes, threads=threads) as embedded:
        console.print(f"running on {redact_url(embedded.redis_url)}; Ctrl-C stops")
        print_channels(settings)
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
    sessions = _sessions(settings)
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


def main() -> None:
    """Console-script entry point."""
    app()
