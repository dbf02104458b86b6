"""Quiet hours in the member's zone: deferred to the exact opening, across DST changes."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.program import QuietHours
from workers.quiet_hours import describe, is_quiet, next_opening, resolve_wall

NY = "America/New_York"
BERLIN = "Europe/Berlin"
SMS = QuietHours(start=time(21), end=time(8))
PUSH = QuietHours(start=time(22), end=time(7))
OFFICE = QuietHours(start=time(9), end=time(17))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def window(start: str, end: str) -> QuietHours:
    return QuietHours(start=time.fromisoformat(start), end=time.fromisoformat(end))


@pytest.mark.parametrize(
    ("zone", "quiet", "now", "opening"),
    [
        # New York, spring forward on 8 March 2026 (02:00 EST -> 03:00 EDT).
        (NY, SMS, "2026-03-08T03:00", "2026-03-08T12:00"),  # 22:00 EST -> 08:00 EDT
        (NY, SMS, "2026-03-08T11:59", "2026-03-08T12:00"),  # 07:59 EDT
        (NY, SMS, "2026-03-08T12:00", None),  # 08:00 EDT: open
        (NY, SMS, "2026-03-08T01:59", None),  # 20:59 EST on the 7th
        (NY, SMS, "2026-03-09T01:00", "2026-03-09T12:00"),  # 21:00 EDT -> 08:00 EDT
        # New York, fall back on 1 November 2026 (02:00 EDT -> 01:00 EST).
        (NY, SMS, "2026-11-01T01:00", "2026-11-01T13:00"),  # 21:00 EDT -> 08:00 EST
        (NY, SMS, "2026-11-01T05:30", "2026-11-01T13:00"),  # 01:30 EDT
        (NY, SMS, "2026-11-01T06:30", "2026-11-01T13:00"),  # 01:30 EST
        (NY, SMS, "2026-11-01T12:59", "2026-11-01T13:00"),  # 07:59 EST
        (NY, SMS, "2026-11-01T13:00", None),
        (NY, SMS, "2026-11-01T00:59", None),  # 20:59 EDT on 31 October
        # Berlin, spring forward on 29 March 2026 (02:00 CET -> 03:00 CEST).
        (BERLIN, PUSH, "2026-03-28T21:00", "2026-03-29T05:00"),  # 22:00 CET -> 07:00 CEST
        (BERLIN, PUSH, "2026-03-28T20:59", None),
        (BERLIN, PUSH, "2026-03-29T04:59", "2026-03-29T05:00"),
        (BERLIN, PUSH, "2026-03-29T05:00", None),
        # Berlin, fall back on 25 October 2026 (03:00 CEST -> 02:00 CET).
        (BERLIN, PUSH, "2026-10-24T20:00", "2026-10-25T06:00"),  # 22:00 CEST -> 07:00 CET
        (BERLIN, PUSH, "2026-10-25T00:30", "2026-10-25T06:00"),  # 02:30 CEST
        (BERLIN, PUSH, "2026-10-25T01:30", "2026-10-25T06:00"),  # 02:30 CET
        (BERLIN, PUSH, "2026-10-25T06:00", None),
        # A window that does not wrap midnight.
        (NY, OFFICE, "2026-03-08T14:00", "2026-03-08T21:00"),  # 10:00 EDT -> 17:00 EDT
        (NY, OFFICE, "2026-03-08T12:59", None),  # 08:59 EDT
        (NY, OFFICE, "2026-03-08T21:00", None),
        (BERLIN, OFFICE, "2026-10-25T08:00", "2026-10-25T16:00"),  # 09:00 CET -> 17:00 CET
        (BERLIN, window("01:00", "05:00"), "2026-03-29T00:30", "2026-03-29T03:00"),
    ],
)
def test_the_opening_is_the_exact_instant_the_window_ends(
    zone: str, quiet: QuietHours, now: str, opening: str | None
):
    """Inside: the end of the window, resolved on the right local date. Outside: None."""
    expected = utc(opening) if opening is not None else None

    assert expected == next_opening(utc(now), zone, quiet)


@pytest.mark.parametrize(
    ("zone", "quiet", "now", "opening"),
    [
        # An end of 02:30 does not exist on 8 March in New York: the first instant after the gap.
        (NY, window("22:00", "02:30"), "2026-03-08T06:30", "2026-03-08T07:00"),  # 01:30 EST
        (NY, window("22:00", "02:30"), "2026-03-08T06:59", "2026-03-08T07:00"),
        (NY, window("22:00", "02:30"), "2026-03-08T07:00", None),  # 03:00 EDT
        (BERLIN, window("23:00", "02:30"), "2026-03-29T00:30", "2026-03-29T01:00"),
        # A start inside the gap starts the window at the first instant after the gap.
        (NY, window("02:30", "06:00"), "2026-03-08T06:59", None),  # 01:59 EST
        (NY, window("02:30", "06:00"), "2026-03-08T07:00", "2026-03-08T10:00"),
        # A window wholly inside the gap is not there that night, and is the next.
        (NY, window("02:00", "02:45"), "2026-03-08T06:59", None),
        (NY, window("02:00", "02:45"), "2026-03-08T07:00", None),
        (NY, window("02:00", "02:45"), "2026-03-09T06:10", "2026-03-09T06:45"),
        # Santiago skips from 00:00 to 01:00 on 7 Sep 2025: the one open minute (00:00-00:01)
        # does not exist that night, so the window runs on to the next night's opening.
        ("America/Santiago", window("00:01", "00:00"), "2025-09-07T03:59", "2025-09-08T03:00"),
    ],
)
def test_a_wall_time_in_the_spring_gap_is_the_first_instant_after_it(
    zone: str, quiet: QuietHours, now: str, opening: str | None
):
    """02:30 on a spring-forward night is read as 03:00, the first instant that exists."""
    expected = utc(opening) if opening is not None else None

    assert expected == next_opening(utc(now), zone, quiet)


@pytest.mark.parametrize(
    ("zone", "quiet", "now", "opening"),
    [
        # 01:30 happens twice on 1 November in New York: the window ends at the first.
        (NY, window("22:00", "01:30"), "2026-11-01T05:00", "2026-11-01T05:30"),  # 01:00 EDT
        (NY, window("22:00", "01:30"), "2026-11-01T05:30", None),  # 01:30 EDT
        # ... and does not start again when the clock shows 01:00 a second time.
        (NY, window("22:00", "01:30"), "2026-11-01T06:10", None),  # 01:10 EST
        # A start in the repeated hour starts at its first occurrence and stays quiet.
        (NY, window("01:30", "05:00"), "2026-11-01T05:10", None),  # 01:10 EDT
        (NY, window("01:30", "05:00"), "2026-11-01T05:30", "2026-11-01T10:00"),
        (NY, window("01:30", "05:00"), "2026-11-01T06:05", "2026-11-01T10:00"),  # 01:05 EST
        (BERLIN, window("23:00", "02:30"), "2026-10-25T00:10", "2026-10-25T00:30"),  # CEST
        (BERLIN, window("23:00", "02:30"), "2026-10-25T01:10", None),  # 02:10 CET
    ],
)
def test_a_repeated_wall_time_is_its_first_occurrence(
    zone: str, quiet: QuietHours, now: str, opening: str | None
):
    """On a fall-back night the window opens once, at the first occurrence of its end."""
    expected = utc(opening) if opening is not None else None

    assert expected == next_opening(utc(now), zone, quiet)


@pytest.mark.parametrize(
    ("zone", "first", "last"),
    [(NY, date(2026, 3, 1), date(2026, 3, 15)), (NY, date(2026, 10, 25), date(2026, 11, 8))],
)
def test_each_night_opens_once_at_eight_local_across_dst_changes(
    zone: str, first: date, last: date
):
    """Stepping every 10 minutes through two weeks: one opening per night, always 08:00 local."""
    # Given every instant from the first date to the last, 10 minutes apart
    tz = ZoneInfo(zone)
    now = datetime.combine(first, time(12), tz).astimezone(UTC)
    end = datetime.combine(last, time(12), tz).astimezone(UTC)
    openings = set()
    while now < end:
        # When each is checked against the sms window
        opening = next_opening(now, zone, SMS)
        if opening is not None:
            openings.add(opening)
        now += timedelta(minutes=10)

    # Then each night has exactly one opening, at 08:00 on the member's clock
    local = sorted(o.astimezone(tz) for o in openings)
    assert [o.time() for o in local] == [time(8)] * ((last - first).days)
    assert [o.date() for o in local] == [
        first + timedelta(days=n + 1) for n in range((last - first).days)
    ]


def test_a_member_without_a_known_zone_uses_the_default():
    """None and unknown zone names fall back to the program's default zone."""
    now = utc("2026-06-01T20:30")  # 22:30 in Berlin, 16:30 in New York

    berlin = next_opening(now, BERLIN, PUSH)

    assert berlin == utc("2026-06-02T05:00")
    assert next_opening(now, None, PUSH, default_time_zone=BERLIN) == berlin
    assert next_opening(now, "Mars/Olympus_Mons", PUSH, default_time_zone=BERLIN) == berlin
    assert next_opening(now, None, PUSH, default_time_zone=NY) is None
    assert is_quiet(now, None, PUSH, default_time_zone=BERLIN)
    assert not is_quiet(now, BERLIN, None)


def test_a_naive_now_is_refused():
    """Instants are aware; a naive one is a bug in the caller."""
    with pytest.raises(ValueError, match="aware"):
        next_opening(datetime(2026, 6, 1, 12), NY, SMS)


@pytest.mark.parametrize(
    ("until", "zone", "expected"),
    [
        ("2026-12-01T13:00", NY, "quiet_hours: sms until 2026-12-01T08:00-05:00"),
        ("2026-07-01T12:00", NY, "quiet_hours: sms until 2026-07-01T08:00-04:00"),
        ("2026-07-01T05:00", BERLIN, "quiet_hours: sms until 2026-07-01T07:00+02:00"),
        ("2026-07-01T02:30", "Asia/Kolkata", "quiet_hours: sms until 2026-07-01T08:00+05:30"),
        ("2026-07-01T08:00", None, "quiet_hours: sms until 2026-07-01T08:00+00:00"),
    ],
)
def test_describe_shows_the_opening_on_the_members_clock(
    until: str, zone: str | None, expected: str
):
    """The deferred delivery's detail names the channel and the local opening with its offset."""
    assert expected == describe(utc(until), zone, channel="sms")


# -- the property: the opening is the first instant outside, checked by stepping ----------

ZONES = [
    NY,
    BERLIN,
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight (00:00 -> 01:00, 01:00 -> 00:00)
    "Asia/Kathmandu",  # +05:45
    "Pacific/Chatham",  # +12:45 / +13:45
    "UTC",
]


@functools.cache
def _transitions(zone: str) -> tuple[datetime, ...]:
    """Every instant in 2025-2027 at which ``zone``'s offset changes (to the hour)."""
    tz = ZoneInfo(zone)
    found = []
    t = datetime(2025, 1, 1, tzinfo=UTC)
    offset = t.astimezone(tz).utcoffset()
    while t.year < 2028:
        t += timedelta(hours=1)
        if (now := t.astimezone(tz).utcoffset()) != offset:
            found.append(t)
            offset = now
    return tuple(found)


def _first_instant_showing(wall: datetime, tz: ZoneInfo) -> datetime:
    """By brute force: the first minute at which the member's clock shows ``wall`` or later."""
    t = (wall - timedelta(hours=15)).replace(tzinfo=UTC)
    while t.astimezone(tz).replace(tzinfo=None) < wall:
        t += timedelta(minutes=1)
    return t


def _intervals(zone: str, quiet: QuietHours, around: datetime) -> list[tuple[datetime, datetime]]:
    tz = ZoneInfo(zone)
    today = around.astimezone(tz).date()
    spans = []
    for offset in range(-2, 3):
        day = today + timedelta(days=offset)
        end_day = day if quiet.start < quiet.end else day + timedelta(days=1)
        start = _first_instant_showing(datetime.combine(day, quiet.start), tz)
        end = _first_instant_showing(datetime.combine(end_day, quiet.end), tz)
        spans.append((start, end))
    return spans


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    transitions = _transitions(zone)
    if transitions and draw(st.booleans()):
        near = draw(st.sampled_from(transitions))
        return near + timedelta(seconds=draw(st.integers(-30 * 3600, 30 * 3600)))
    seconds = draw(st.integers(0, 3 * 365 * 86400))
    return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, QuietHours, datetime]:
    zone = draw(st.sampled_from(ZONES))
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(0, 24 * 60 - 1).filter(lambda m: m != start))
    quiet = QuietHours(start=time(start // 60, start % 60), end=time(end // 60, end % 60))
    return zone, quiet, draw(instants(zone))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_the_opening_is_the_first_instant_outside_the_window(
    case: tuple[str, QuietHours, datetime],
):
    """After now, outside the window, and every minute from now until it is inside.

    "Inside" is computed independently by brute force: each local date's window
    runs from the first minute the member's clock shows its start to the first
    minute it shows its end.
    """
    zone, quiet, now = case
    spans = _intervals(zone, quiet, now)

    def inside(t: datetime) -> bool:
        return any(start <= t < end for start, end in spans)

    opening = next_opening(now, zone, quiet)

    if opening is None:
        assert not inside(now)
        return
    assert opening > now
    assert not inside(opening)
    assert opening.second == 0
    t = now
    while t < opening:
        assert inside(t), t
        t = t.replace(second=0, microsecond=0) + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("wall", "zone", "expected"),
    [
        ("2026-03-08T02:30", NY, "2026-03-08T07:00"),
        ("2026-11-01T01:30", NY, "2026-11-01T05:30"),
        ("2026-03-29T02:00", BERLIN, "2026-03-29T01:00"),
        ("2026-10-25T02:59", BERLIN, "2026-10-25T00:59"),
        ("2011-12-30T12:00", "Pacific/Apia", "2011-12-30T10:00"),  # a whole day skipped
    ],
)
def test_resolve_wall(wall: str, zone: str, expected: str):
    """A wall time in a gap is the instant after the gap; a repeated one its first occurrence."""
    assert utc(expected) == resolve_wall(datetime.fromisoformat(wall), ZoneInfo(zone))
