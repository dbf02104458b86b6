"""``loyalcast campaigns``: create, status, forecast, test-send, cancel, pause, replan, resume.

The cells of the status table (open deliveries, ETA) are worked out here too.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from loyalcast.cli._common import console, errors, fail, load_program, load_settings, make_sessions

app = typer.Typer(help="Campaign files, versions and progress.", no_args_is_help=True)


@app.command("create")
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
    sessions = make_sessions(settings)
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


@app.command("status")
def campaigns_status(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Show a campaign's runs with progress and ETA, and its deliveries by status and reason."""
    from workers.catalog import campaign_status
    from workers.progress import provider_rates

    settings = load_settings()
    sessions = make_sessions(settings)
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
    for run in report.runs:
        if run["error"]:
            console.print(f"[red]run {run['id']} failed:[/] {escape(run['error'])}")
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


@app.command("forecast")
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
    make_sessions(settings)
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


@app.command("test-send")
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
    make_sessions(settings)
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


@app.command("cancel")
def campaigns_cancel(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Cancel a campaign: returns once nothing more of it can be sent, on any worker."""
    from workers.control import cancel_campaign

    settings = load_settings()
    try:
        result = cancel_campaign(make_sessions(settings), name, timeout=settings.lease_seconds)
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


@app.command("pause")
def campaigns_pause(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Pause a campaign: nothing more is sent or planned until it is resumed."""
    from workers.control import pause_campaign

    settings = load_settings()
    try:
        waiting = pause_campaign(make_sessions(settings), name)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    console.print(f"campaign {name} paused: {waiting} deliveries wait")


@app.command("replan")
def campaigns_replan(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Schedule a campaign's failed runs again, once the program allows its rules.

    A run fails when the campaign's segment names an attribute the policy file
    no longer declares (`campaigns status` shows why). Declare it again and
    restart the workers, or update the campaign with `campaigns create`; then
    run this. The scheduler's next tick plans the runs.
    """
    from workers.control import replan_campaign

    settings = load_settings()
    try:
        runs = replan_campaign(make_sessions(settings), name, load_program(settings))
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    if not runs:
        console.print(f"campaign {name} has no failed run")
        return
    listed = ", ".join(str(run) for run in runs)
    console.print(f"campaign {name}: run(s) {listed} scheduled again; the next tick plans them")


@app.command("resume")
def campaigns_resume(name: Annotated[str, typer.Argument(help="The campaign's name.")]) -> None:
    """Resume a paused campaign: its waiting deliveries are due at once."""
    from workers import close_broker, make_broker
    from workers.control import resume_campaign

    settings = load_settings()
    broker = make_broker(settings) if settings.redis_url else None
    try:
        resumed = resume_campaign(make_sessions(settings), name, broker)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    finally:
        if broker is not None:
            close_broker(broker)
    how = "enqueued" if broker is not None else "due (the scheduler's sweep enqueues them)"
    console.print(f"campaign {name} resumed: {resumed} deliveries {how}")
