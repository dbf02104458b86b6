"""``loyalcast segments``: save, preview and snapshot saved audiences."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loyalcast.cli._common import console, fail, load_program, load_settings, make_sessions

app = typer.Typer(help="Saved audiences: save, preview, snapshot.", no_args_is_help=True)


@app.command("save")
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
    sessions = make_sessions(settings)
    with sessions.begin() as session:
        save_segment(
            session,
            parsed.name,
            parsed.rule_data,
            attributes=program.attributes,
            description=parsed.description,
        )
    console.print(f"segment {parsed.name} saved")


@app.command("preview")
def segments_preview(
    what: Annotated[str, typer.Argument(help="A segment file, or the name of a saved segment.")],
    sample: Annotated[int, typer.Option(help="How many members to show.", min=0)] = 10,
) -> None:
    """How many members a segment selects now, a sample of them, and the query's cost."""
    from segments import load_segment, preview
    from workers.segment_files import SegmentFileError, parse_segment_file

    settings = load_settings()
    program = load_program(settings)
    sessions = make_sessions(settings)
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


@app.command("snapshot")
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
    sessions = make_sessions(settings)
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
