"""``loyalcast members``: import members, enroll them in welcome sequences, say why."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from loyalcast.cli._common import console, errors, fail, load_program, load_settings, make_sessions
from loyalcast.settings import Settings

app = typer.Typer(help="Members and their data.", no_args_is_help=True)


@app.command("import")
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
        from workers.sequences import SequenceRuleNotAllowed

        try:
            _enroll_and_report(settings, report.created_ids, source="import")
        except SequenceRuleNotAllowed as exc:
            fail(
                f"{len(report.created_ids)} new members imported, none enrolled: {exc}; "
                "once fixed, enroll them with `loyalcast members enroll`"
            )
    if report.errors and not skip_bad:
        fail("nothing was written (all-or-nothing); fix the rows above or use --skip-bad")
    if report.errors:
        raise typer.Exit(1)


@app.command("enroll")
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
    from workers.sequences import (
        CampaignNotEnrollable,
        SequenceRuleNotAllowed,
        UnknownCampaign,
        UnknownMembers,
    )

    settings = load_settings()
    try:
        _enroll_and_report(settings, external_ids, source="cli", campaign=campaign)
    except (
        UnknownMembers,
        UnknownCampaign,
        CampaignNotEnrollable,
        SequenceRuleNotAllowed,
    ) as exc:
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
            make_sessions(settings),
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


@app.command("why")
def members_why(
    member: Annotated[str, typer.Argument(help="The member's external id.")],
    campaign: Annotated[str | None, typer.Option(help="Only this campaign's deliveries.")] = None,
    limit: Annotated[int, typer.Option(help="How many recent deliveries.", min=1)] = 20,
) -> None:
    """Show a member's consents and recent deliveries, each with why it was or was not sent."""
    from workers.history import member_history

    settings = load_settings()
    sessions = make_sessions(settings)
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
