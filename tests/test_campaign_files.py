"""Campaign files: every mistake is refused with its place named, and nothing is half-written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select

from store import Campaign, CampaignRun, CampaignVersion
from workers import CampaignFileError, parse_campaign
from workers.catalog import create_campaign

from .support import add_member, sessions_for, write_campaign

GOOD = """\
name: winter
kind: broadcast
category: marketing
segment:
  all:
    - {field: tier, op: in, value: [gold, platinum]}
    - {field: points_balance, op: ">=", value: 500}
channels: [push, email, sms]
template: winter-double-points
schedule: {at: "2026-12-01T10:00", timezone: Europe/Berlin}
"""


def _problem(text: str) -> str:
    with pytest.raises(CampaignFileError) as info:
        parse_campaign(textwrap.dedent(text), "winter.yaml")
    return str(info.value)


def test_a_good_file_parses_and_resolves_its_schedule_in_its_time_zone():
    """10:00 in Berlin on 1 December is 09:00 UTC."""
    spec = parse_campaign(GOOD, "winter.yaml")
    assert spec.channel_list == ["push", "email", "sms"]
    assert spec.schedule is not None
    assert spec.schedule.due_at().isoformat() == "2026-12-01T09:00:00+00:00"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('op: ">="', 'op: "=>"'), 'winter.yaml, line 7, segment.all[1].op: unknown operator "=>"'),
        (
            ("field: tier", "field: tierr"),
            'winter.yaml, line 6, segment.all[0].field: unknown field "tierr"',
        ),
        (
            ("kind: broadcast", "kind: boradcast"),
            "winter.yaml, line 2, kind: Input should be 'broadcast'",
        ),
        (
            ("[push, email, sms]", "[push, fax]"),
            "winter.yaml, line 8, channels: unknown channel 'fax'",
        ),
        (
            ("Europe/Berlin", "Europe/Berlín"),
            "winter.yaml, line 10, schedule.timezone: unknown IANA time zone",
        ),
        (
            ("category: marketing", "category: marketing\ncolour: blue"),
            "winter.yaml, line 4, colour: Extra inputs are not permitted",
        ),
        (
            ("name: winter", "name: Winter Sale!"),
            "winter.yaml, line 1, name: must be lower-case letters",
        ),
        (
            ("template: winter-double-points", "template: ../../etc"),
            "winter.yaml, line 9, template: must be lower-case",
        ),
    ],
)
def test_mistakes_are_named_by_line_and_key(change, expected):
    """Each mistake's message starts with file, line and key path."""
    old, new = change
    assert _problem(GOOD.replace(old, new)).startswith(expected)


def test_broken_yaml_names_its_line():
    """A YAML syntax error is reported with the line it is on."""
    message = _problem("name: winter\nkind: [broadcast\ncategory: marketing\n")
    assert message.startswith("winter.yaml, line ")
    assert "not valid YAML" in message


def test_a_key_of_another_kind_is_refused_on_its_line():
    message = _problem(GOOD.replace("kind: broadcast", "kind: expiry_reminder"))
    assert "winter.yaml, line 10, schedule: only a campaign of kind broadcast takes schedule" in (
        message
    )


EXPIRY = """\
name: points-expiry
kind: expiry_reminder
category: service
lead_days: [7, 30, 1]
min_points: 50
channels: [email, sms]
template: points-expiry
"""

WELCOME = """\
name: welcome
kind: welcome_sequence
category: marketing
channels: [email]
exit_when: {field: tier, op: "=", value: closed}
steps:
  - {after: 0m, template: welcome-1}
  - {after: 2d, channels: [push, sms], template: welcome-2,
     unless: {field: purchases_count, op: ">", value: 0}}
  - {after: 1d12h, template: welcome-3, only_if: {field: tier, op: "=", value: gold}}
"""


def test_an_expiry_reminder_file_parses_with_its_leads_most_distant_first():
    spec = parse_campaign(EXPIRY, "expiry.yaml")
    assert (spec.kind, spec.lead_days, spec.reminder_min_points) == (
        "expiry_reminder",
        [30, 7, 1],
        50,
    )
    assert spec.messages() == {"points-expiry": ["email", "sms"]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("lead_days: [7, 30, 1]", "lead_days: []"), "lead_days: name at least one lead time"),
        (("lead_days: [7, 30, 1]", "lead_days: [7, 0]"), "lead_days: lead days are whole days"),
        (("lead_days: [7, 30, 1]", "lead_days: [7, 7]"), "lead_days: a lead time is named twice"),
        (("lead_days: [7, 30, 1]\n", ""), "a expiry_reminder campaign needs lead_days"),
        (("min_points: 50", "min_points: 0"), "line 5, min_points: Input should be greater"),
    ],
)
def test_expiry_reminder_mistakes_are_named(change, expected):
    assert expected in _problem(EXPIRY.replace(*change))


def test_a_welcome_sequence_parses_its_steps_and_their_channels():
    spec = parse_campaign(WELCOME, "welcome.yaml")
    steps = spec.steps or []
    assert [step.after.total_seconds() for step in steps] == [0, 2 * 86400, 36 * 3600]
    assert spec.messages() == {
        "welcome-1": ["email"],
        "welcome-2": ["push", "sms"],
        "welcome-3": ["email"],
    }
    assert [loc for loc, _ in spec.rules()] == [
        ("steps", 1, "unless"),
        ("steps", 2, "only_if"),
        ("exit_when",),
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("after: 2d,", "after: 2 days,"), "line 8, steps[1].after: not a duration: '2 days'"),
        (("after: 0m", "after: 400d"), "steps[0].after: a step comes at most 366d"),
        (('op: ">"', 'op: "=>"'), 'line 9, steps[1].unless.op: unknown operator "=>"'),
        (("field: tier, op", "field: hair, op"), "exit_when.field: unknown field"),
        (("channels: [email]\n", ""), "needs channels (for the steps that name none)"),
        (("template: welcome-1", "template: Welcome"), "steps[0].template: must be lower-case"),
    ],
)
def test_welcome_sequence_mistakes_name_the_step(change, expected):
    assert expected in _problem(WELCOME.replace(*change))


def test_a_triggered_campaign_names_a_saved_segment():
    text = GOOD.replace("kind: broadcast", "kind: triggered").replace(
        'schedule: {at: "2026-12-01T10:00", timezone: Europe/Berlin}', "on: entered_segment vip"
    )
    spec = parse_campaign(text, "t.yaml")
    assert (spec.trigger_segment, spec.snapshot_every.total_seconds()) == ("vip", 3600)
    assert "line 10, on: write `on: entered_segment NAME`" in _problem(
        text.replace("entered_segment vip", "left vip")
    )


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ('{cron: "0 10 * * MON", timezone: member, spread: 2h}', None),
        ('{cron: "0 10 * * XYZ"}', "schedule.cron: not a cron expression"),
        ('{at: "2026-12-01T10:00", cron: "0 10 * * MON"}', "give either at"),
        ('{at: "2026-12-01T10:00", until: "2027-01-01T00:00"}', "until ends a cron recurrence"),
        ('{at: "2026-12-01T10:00", spread: 3d}', "spread must be more than 0 and at most 1d"),
        ('{at: "2026-12-01T10:00", timezone: Mars/Base}', "unknown IANA time zone"),
    ],
)
def test_schedules_are_checked(schedule, expected):
    text = GOOD.replace('{at: "2026-12-01T10:00", timezone: Europe/Berlin}', schedule)
    if expected is None:
        spec = parse_campaign(text, "w.yaml")
        assert spec.schedule is not None
        assert spec.schedule.recurring
    else:
        assert expected in _problem(text)


def _counts(sessions) -> tuple[int, int, int]:
    with sessions() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(t))
            for t in (Campaign, CampaignVersion, CampaignRun)
        )


def test_a_template_syntax_error_is_refused_with_template_and_line(database_url, tmp_path: Path):
    """A broken template names its file and line, and no campaign, version or run is stored."""
    # Given a campaign whose email subject template has a syntax error on line 2
    sessions = sessions_for(database_url)
    folder = tmp_path / "templates" / "broken"
    folder.mkdir(parents=True)
    (folder / "email.subject.j2").write_text("Hello\n{{ member.first_name }\n")
    (folder / "email.html.j2").write_text("<p>hi</p>")
    (folder / "email.text.j2").write_text("hi")
    path = write_campaign(tmp_path, channels="[email]")
    path.write_text(path.read_text().replace("winter-double-points", "broken"))
    # When it is created
    with pytest.raises(CampaignFileError) as info:
        create_campaign(sessions, path)
    # Then the error names the template file and line, and nothing was written
    assert "template broken/email.subject.j2: line 2" in str(info.value)
    assert _counts(sessions) == (0, 0, 0)


def test_a_template_that_fails_for_a_sample_member_is_refused(database_url, tmp_path: Path):
    """Templates are rendered for sample members: one failing for a nameless member is refused."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        add_member(s)
    folder = tmp_path / "templates" / "nameless"
    folder.mkdir(parents=True)
    (folder / "email.subject.j2").write_text("Hi {{ member.name }}")
    (folder / "email.html.j2").write_text("<p>hi</p>")
    (folder / "email.text.j2").write_text("hi")
    path = write_campaign(tmp_path, channels="[email]")
    path.write_text(path.read_text().replace("winter-double-points", "nameless"))
    with pytest.raises(CampaignFileError) as info:
        create_campaign(sessions, path)
    assert "nameless/email.subject.j2: line 1" in str(info.value)
    assert "(member sample-empty)" in str(info.value)
    assert _counts(sessions) == (0, 0, 0)


def test_a_missing_template_part_is_refused(database_url, tmp_path: Path):
    """A campaign naming a template with no SMS part for an SMS channel is refused."""
    sessions = sessions_for(database_url)
    path = write_campaign(tmp_path, channels="[sms]")
    path.write_text(path.read_text().replace("winter-double-points", "no-such-template"))
    with pytest.raises(CampaignFileError) as info:
        create_campaign(sessions, path)
    assert "no-such-template/sms.text.j2" in str(info.value)
    assert _counts(sessions) == (0, 0, 0)


def test_creating_the_same_file_twice_changes_nothing_and_a_change_makes_a_version(
    database_url, tmp_path: Path
):
    """Same file: same version and run. Edited file: version 2, and the run keeps its version."""
    sessions = sessions_for(database_url)
    path = write_campaign(tmp_path)
    first = create_campaign(sessions, path)
    again = create_campaign(sessions, path)
    assert (again.changed, again.version, again.run_id) == (False, 1, first.run_id)
    path.write_text(path.read_text().replace("max_attempts: 3", "max_attempts: 4"))
    edited = create_campaign(sessions, path)
    assert (edited.changed, edited.version) == (True, 2)
    assert _counts(sessions) == (1, 2, 1)
