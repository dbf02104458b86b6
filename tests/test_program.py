"""The program policy file: validated at start, every problem named by file, line and key."""

from __future__ import annotations

import dataclasses
from datetime import time, timedelta
from pathlib import Path

import pytest

from workers.program import (
    CapRule,
    Program,
    ProgramFileError,
    QuietHours,
    format_duration,
    load_program,
    parse_duration,
    parse_program,
)

GOOD = """\
default_time_zone: America/New_York
quiet_hours:
  sms:  {start: "21:00", end: "08:00"}
  push: {start: "22:00", end: "07:00"}
  email: null
caps:
  - {name: marketing-weekly, scope: all, window: 7d, limit: 3, categories: [marketing]}
  - {name: sms-daily, scope: sms, window: calendar_day, limit: 1, categories: [marketing, service]}
  - {name: push-weekly, scope: push, window: calendar_week, limit: 5, categories: [marketing]}
categories: [marketing, service, transactional]
attributes: {favourite_store: text, lifetime_spend: number, vip_since: instant, tags: text_list}
postal_lead_business_days: 5
"""


def _problem(text: str) -> str:
    with pytest.raises(ProgramFileError) as info:
        parse_program(text, "program.yaml")
    return str(info.value)


def test_a_good_file_gives_frozen_values():
    """Every key of the example file becomes a typed, frozen value."""
    program = parse_program(GOOD, "program.yaml")

    assert program.default_time_zone == "America/New_York"
    assert program.quiet_hours_for("sms") == QuietHours(start=time(21), end=time(8))
    assert program.quiet_hours_for("push") == QuietHours(start=time(22), end=time(7))
    assert program.quiet_hours_for("email") is None
    assert program.quiet_hours_for("direct_mail") is None
    assert [str(rule) for rule in program.caps] == [
        "marketing-weekly 3/7d",
        "sms-daily 1/calendar_day",
        "push-weekly 5/calendar_week",
    ]
    assert program.caps[0] == CapRule(
        name="marketing-weekly",
        scope="all",
        window=timedelta(days=7),
        limit=3,
        categories=frozenset({"marketing"}),
    )
    assert program.categories == frozenset({"marketing", "service", "transactional"})
    assert dict(program.attributes) == {
        "favourite_store": "text",
        "lifetime_spend": "number",
        "vip_since": "instant",
        "tags": "text_list",
    }
    assert program.postal_lead_business_days == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        program.default_time_zone = "UTC"  # type: ignore[misc]
    with pytest.raises(TypeError):
        program.quiet_hours["sms"] = None  # type: ignore[index]


def test_the_default_program_has_sms_quiet_hours_and_no_caps():
    """Without a file: UTC, sms quiet 21:00-08:00, no other quiet hours, no caps."""
    program = Program.default()

    assert program.default_time_zone == "UTC"
    assert program.quiet_hours_for("sms") == QuietHours(start=time(21), end=time(8))
    assert program.quiet_hours_for("push") is None
    assert program.caps == ()
    assert program.postal_lead_business_days == 5


def test_sms_keeps_its_default_window_unless_the_file_says_null():
    """An absent sms key means 21:00-08:00; ``sms: null`` means none."""
    absent = parse_program('quiet_hours: {push: {start: "22:00", end: "07:00"}}\n', "p.yaml")
    off = parse_program("quiet_hours: {sms: null}\n", "p.yaml")

    assert absent.quiet_hours_for("sms") == QuietHours(start=time(21), end=time(8))
    assert off.quiet_hours_for("sms") is None


def test_caps_for_picks_rules_by_scope_and_category_and_never_transactional():
    """A rule applies on its channel (or all) to its categories; transactional never counts."""
    program = parse_program(GOOD, "program.yaml")

    names = {
        (channel, category): [rule.name for rule in program.caps_for(channel, category)]
        for channel in ("sms", "push", "email")
        for category in ("marketing", "service", "transactional")
    }

    assert names[("sms", "marketing")] == ["marketing-weekly", "sms-daily"]
    assert names[("sms", "service")] == ["sms-daily"]
    assert names[("push", "marketing")] == ["marketing-weekly", "push-weekly"]
    assert names[("email", "service")] == []
    assert all(names[(c, "transactional")] == [] for c in ("sms", "push", "email"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('"21:00"', "21:00"),
            'program.yaml, line 3, quiet_hours.sms.start: write times in quotes, e.g. "21:00"',
        ),
        (
            ('"08:00"', '"8am"'),
            "program.yaml, line 3, quiet_hours.sms.end: '8am' is not a time",
        ),
        (
            ('"22:00", end: "07:00"', '"07:00", end: "07:00"'),
            "program.yaml, line 4, quiet_hours.push: start and end are the same time",
        ),
        (
            ("email: null", "fax: null"),
            "program.yaml, line 5, quiet_hours.fax: unknown channel",
        ),
        (
            ("email: null", 'direct_mail: {start: "21:00", end: "08:00"}'),
            "program.yaml, line 5, quiet_hours.direct_mail: direct_mail has no quiet hours",
        ),
        (("New_York", "Nowhere"), "program.yaml, line 1, default_time_zone: unknown IANA"),
        (("window: 7d", "window: 7x"), "program.yaml, line 7, caps[0].window: '7x' is not a"),
        (
            ("window: 7d", "window: 400d"),
            "program.yaml, line 7, caps[0].window: a rolling window is at most 366d",
        ),
        (
            ("[marketing]}", "[marketing, transactional]}"),
            "program.yaml, line 7, caps[0].categories: transactional is always exempt",
        ),
        (("limit: 3", "limit: 0"), "program.yaml, line 7, caps[0].limit: Input should be"),
        (
            ("limit: 1", 'limit: "1"'),
            "program.yaml, line 8, caps[1].limit: Input should be a valid integer",
        ),
        (("scope: sms", "scope: fax"), "program.yaml, line 8, caps[1].scope: Input should be"),
        (
            ("sms-daily", "marketing-weekly"),
            "program.yaml, line 8, caps[1].name: a cap named 'marketing-weekly' is already",
        ),
        (
            ("[marketing, service]", "[marketing, promo]"),
            "program.yaml, line 8, caps[1].categories[1]: unknown category 'promo'",
        ),
        (
            ("tags: text_list", "tags: list"),
            "program.yaml, line 11, attributes.tags: Input should be 'text', 'integer'",
        ),
        (
            ("tags: text_list", "tag-s: text"),
            "program.yaml, line 11, attributes.tag-s: an attribute name is letters",
        ),
        (
            ("postal_lead_business_days: 5", "postal_lead_business_days: -1"),
            "program.yaml, line 12, postal_lead_business_days: Input should be greater",
        ),
        (("postal_lead_business_days", "postal_lead_days"), "line 12, postal_lead_days: Extra"),
    ],
)
def test_each_mistake_is_named_by_line_and_key(change: tuple[str, str], expected: str):
    """A mistake is refused with the file, the line and the key path."""
    old, new = change
    assert old in GOOD

    message = _problem(GOOD.replace(old, new, 1))

    assert expected in message


def test_every_problem_is_listed_at_once():
    """Two mistakes give two lines, each with its place."""
    text = GOOD.replace("limit: 3", "limit: 0").replace("tags: text_list", "tags: list")

    lines = _problem(text).splitlines()

    assert len(lines) == 2
    assert lines[0].startswith("program.yaml, line 7, caps[0].limit")
    assert lines[1].startswith("program.yaml, line 11, attributes.tags")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("caps: [", "program.yaml, line 1, (file): not valid YAML"),
        ("- a\n- b\n", "program.yaml, line 1, (file): must be a mapping of keys"),
        ("", "program.yaml, line 1, (file): must be a mapping of keys"),
    ],
)
def test_a_file_that_is_not_a_mapping_is_refused(text: str, expected: str):
    """Broken YAML and non-mappings are refused with the file named."""
    assert _problem(text).startswith(expected)


def test_load_program_reads_a_file_and_names_it_in_errors(tmp_path: Path):
    """load_program parses the file at a path; a missing or bad file is named."""
    good = tmp_path / "program.yaml"
    good.write_text(GOOD, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("limit: 3", "limit: 0"), encoding="utf-8")

    assert load_program(good) == parse_program(GOOD, "x")
    with pytest.raises(ProgramFileError, match=r"bad\.yaml, line 7, caps\[0\]\.limit"):
        load_program(bad)
    with pytest.raises(ProgramFileError, match=r"missing\.yaml, \(file\): cannot be read"):
        load_program(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
    ],
)
def test_durations_are_a_number_and_a_unit(text: str, expected: timedelta):
    """30m, 12h, 7d and 2w are durations, shown back in days, hours or minutes."""
    assert expected == parse_duration(text)
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["0d", "7", "d", "1.5h", "7 days", "-1d"])
def test_other_durations_are_refused(text: str):
    """Zero, bare numbers, fractions and words are not durations."""
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_value_types_refuse_what_the_file_would():
    """Built in code, the value types keep the same rules as the file."""
    with pytest.raises(ValueError, match="same time"):
        QuietHours(start=time(8), end=time(8))
    rule = {
        "name": "r",
        "scope": "all",
        "window": timedelta(days=1),
        "limit": 1,
        "categories": frozenset({"marketing"}),
    }
    CapRule(**rule)  # type: ignore[arg-type]
    for change, message in [
        ({"categories": frozenset({"marketing", "transactional"})}, "exempt"),
        ({"limit": 0}, "at least 1"),
        ({"scope": "fax"}, "unknown scope"),
        ({"window": "calendar_month"}, "unknown window"),
        ({"window": timedelta(seconds=30)}, "between 1m and 366d"),
        ({"categories": frozenset()}, "at least one category"),
    ]:
        with pytest.raises(ValueError, match=message):
            CapRule(**{**rule, **change})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        QuietHours(time(21), time(8))  # type: ignore[misc]
