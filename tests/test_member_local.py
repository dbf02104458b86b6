"""Broadcasts at a member-local wall time: each member at their own 10:00."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from scheduler import claim_due_runs
from store import CampaignRun
from workers import CampaignFileError, parse_campaign
from workers.campaigns import Schedule
from workers.delivery import deliver_batch
from workers.planning import plan_run

from .support import (
    add_member,
    create,
    runtime_for,
    scripted_channels,
    sessions_for,
    write_campaign,
)
from .test_pipeline import _rows


@pytest.mark.parametrize(
    ("wall", "zone", "expected"),
    [
        ("2026-12-01T10:00", "America/New_York", "2026-12-01T15:00:00+00:00"),
        ("2026-11-01T10:00", "America/New_York", "2026-11-01T15:00:00+00:00"),  # fall-back day
        ("2026-03-08T10:00", "America/New_York", "2026-03-08T14:00:00+00:00"),  # spring-forward day
        ("2026-10-25T10:00", "Europe/Berlin", "2026-10-25T09:00:00+00:00"),
        (
            "2026-03-29T02:30",
            "Europe/Berlin",
            "2026-03-29T01:00:00+00:00",
        ),  # in the gap: 03:00 CEST
        ("2026-12-01T10:00", "Asia/Tokyo", "2026-12-01T01:00:00+00:00"),
        ("2026-12-01T10:00", "Australia/Sydney", "2026-11-30T23:00:00+00:00"),
    ],
)
def test_a_member_local_wall_time_resolves_per_zone_across_dst(wall, zone, expected):
    """10:00 member-local is the right instant in each zone, on DST days too."""
    schedule = Schedule(at=datetime.fromisoformat(wall), timezone="member")
    assert schedule.member_instant(zone).isoformat() == expected


def test_the_run_falls_due_where_the_wall_time_comes_first():
    """A member-local run is due when 10:00 arrives in the earliest zone (UTC+14)."""
    schedule = Schedule(at=datetime(2026, 12, 1, 10, 0), timezone="member")
    assert schedule.due_at() == datetime(2026, 11, 30, 20, 0, tzinfo=UTC)


def test_a_member_local_schedule_needs_a_wall_time():
    """An offset in a member-local `at` is refused naming the key."""
    text = write_campaign_text('schedule: {at: "2026-12-01T10:00+01:00", timezone: member}')
    with pytest.raises(CampaignFileError) as info:
        parse_campaign(text, "c.yaml")
    assert str(info.value) == (
        "c.yaml, line 6, schedule: timezone: member takes a wall time without offset, "
        "e.g. 2026-12-01T10:00"
    )


def write_campaign_text(extra: str) -> str:
    return (
        "name: local\nkind: broadcast\ncategory: marketing\nchannels: [email]\n"
        f"template: winter-double-points\n{extra}\n"
    )


def test_each_member_waits_for_their_own_10_00(database_url, tmp_path):
    """Planning defers each member's row to 10:00 in their zone; nothing goes out before."""
    # Given members in New York, Tokyo and without a zone, and a broadcast at 10:00 member-local
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        ny = add_member(s, time_zone="America/New_York").id
        tokyo = add_member(s, time_zone="Asia/Tokyo").id
        nowhere = add_member(s, time_zone=None).id
    created = create(
        sessions,
        write_campaign(tmp_path, extra='schedule: {at: "2030-12-02T10:00", timezone: member}\n'),
    )
    with sessions.begin() as s:  # let the run fall due now rather than in 2030
        s.execute(update(CampaignRun).values(due_at=datetime.now(UTC) - timedelta(seconds=1)))
    claim_due_runs(sessions)
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    # When the run is planned and its rows are delivered now
    plan_run(rt, created.run_id)
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    # Then every row waits for its member's own 10:00, and nothing was sent
    rows = {r.member_id: r for r in _rows(sessions)}
    assert {(r.status, r.reason) for r in rows.values()} == {("deferred", "scheduled")}
    assert rows[ny].not_before == datetime(2030, 12, 2, 15, 0, tzinfo=UTC)
    assert rows[tokyo].not_before == datetime(2030, 12, 2, 1, 0, tzinfo=UTC)
    assert rows[nowhere].not_before == datetime(2030, 12, 2, 10, 0, tzinfo=UTC)  # program: UTC
    assert rows[ny].detail == "2030-12-02 10:00 member-local (America/New_York)"
    assert channels["email"].calls == 0
    # When Tokyo's moment has come
    with sessions.begin() as s:
        s.execute(
            update(type(rows[tokyo]))
            .where(type(rows[tokyo]).id == rows[tokyo].id)
            .values(not_before=datetime.now(UTC) - timedelta(seconds=1))
        )
    deliver_batch(rt, [r.id for r in _rows(sessions)])
    # Then only the Tokyo member has it
    assert [m.member_id for m in channels["email"].sent] == [tokyo]
