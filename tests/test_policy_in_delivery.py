"""Quiet hours and frequency caps, decided by the deliver job just before sending."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from channels import PermanentDeliveryError
from scheduler import claim_due_runs
from workers.delivery import deliver_batch
from workers.planning import plan_run
from workers.program import CapRule, Program

from .support import (
    add_member,
    create,
    runtime_for,
    scripted_channels,
    sessions_for,
    write_campaign,
)
from .test_pipeline import _rows


def _send(rt, sessions, tmp_path: Path, name: str, **campaign: str) -> None:
    created = create(sessions, write_campaign(tmp_path, name=name, **campaign))
    claim_due_runs(sessions)
    plan_run(rt, created.run_id)
    deliver_batch(rt, [r.id for r in _rows(sessions, created.run_id)])


def _window_around_now() -> dict[str, str]:
    now = datetime.now(UTC)
    start, end = (now - timedelta(hours=1)).time(), (now + timedelta(hours=1)).time()
    return {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}


@pytest.mark.parametrize(
    ("category", "expected"), [("marketing", "deferred"), ("transactional", "sent")]
)
def test_quiet_hours_defer_to_the_window_opening(database_url, tmp_path, category, expected):
    """Inside the member's quiet hours a message waits for the opening; transactional is exempt."""
    # Given a member in UTC and SMS quiet hours from an hour ago to an hour from now
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        add_member(s, time_zone="UTC", consents={"sms": "opted_in"})
    window = _window_around_now()
    rt = runtime_for(database_url, tmp_path, channels=scripted_channels())
    # When an SMS campaign is delivered
    extra = f"quiet_hours: {{sms: {{start: '{window['start']}', end: '{window['end']}'}}}}\n"
    _send(rt, sessions, tmp_path, "quiet", channels="[sms]", category=category, extra=extra)
    # Then it waits, in the store, until the window's end in the member's zone
    [row] = _rows(sessions)
    assert row.status == expected
    if expected == "deferred":
        end = datetime.combine(datetime.now(UTC).date(), time.fromisoformat(window["end"]), UTC)
        if end < datetime.now(UTC):
            end += timedelta(days=1)
        assert row.reason == "quiet_hours"
        assert row.not_before == end
        assert row.detail == f"quiet_hours: sms until {end.isoformat(timespec='minutes')}"


CAP = CapRule(
    name="marketing-weekly",
    scope="all",
    window=timedelta(days=7),
    limit=2,
    categories=frozenset({"marketing"}),
)


@pytest.fixture
def capped_runtime(database_url, tmp_path, redis_url, redis_namespace):
    def make(channels):
        return runtime_for(
            database_url,
            tmp_path,
            channels=channels,
            redis_url=redis_url,
            queue_namespace=redis_namespace,
            program=Program(quiet_hours={}, caps=(CAP,)),
        )

    return make


@pytest.mark.redis
def test_a_member_never_gets_more_than_the_cap(database_url, tmp_path, capped_runtime):
    """At 2 marketing messages per 7 days the third is suppressed, the rule named."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        add_member(s)
    channels = scripted_channels()
    rt = capped_runtime(channels)
    for name in ("one", "two", "three"):
        _send(rt, sessions, tmp_path, name)
    statuses = [(r.status, r.reason, r.detail) for r in _rows(sessions)]
    assert statuses[:2] == [("sent", None, None)] * 2
    assert statuses[2] == ("suppressed", "frequency_cap", "frequency_cap: marketing-weekly 2/7d")
    assert len(channels["email"].sent) == 2


@pytest.mark.redis
def test_a_permanent_failure_gives_its_slot_back(database_url, tmp_path, capped_runtime):
    """A message that failed for good does not use up the member's cap."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        add_member(s)
    failures = iter([PermanentDeliveryError("content rejected")])
    channels = scripted_channels(lambda m: next(failures, None))
    rt = capped_runtime(channels)
    for name in ("one", "two", "three"):
        _send(rt, sessions, tmp_path, name)
    assert [r.status for r in _rows(sessions)] == ["failed", "sent", "sent"]


def test_caps_without_redis_defer_instead_of_skipping(database_url, tmp_path):
    """When the cap counters cannot be reached the message waits; it is never sent uncapped."""
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        add_member(s)
    channels = scripted_channels()
    rt = runtime_for(
        database_url,
        tmp_path,
        channels=channels,
        redis_url="redis://127.0.0.1:1/0",
        program=Program(quiet_hours={}, caps=(CAP,)),
    )
    _send(rt, sessions, tmp_path, "one")
    [row] = _rows(sessions)
    assert (row.status, row.reason) == ("deferred", "caps_unavailable")
    assert channels["email"].sent == []


@pytest.mark.redis
@pytest.mark.parametrize(
    ("deadline_in", "expected"),
    [(timedelta(days=30), "deferred"), (timedelta(days=2), "suppressed")],
)
def test_a_capped_deadline_bound_message_waits_for_a_free_slot_before_its_deadline(
    database_url, tmp_path, capped_runtime, deadline_in, expected
):
    """Over the cap, a deadline-bound message waits for the next free slot if that comes in time."""
    from channels import Message
    from workers.capping import apply_caps

    # Given a member who has had the 2 messages the weekly cap allows
    sessions = sessions_for(database_url)
    with sessions.begin() as s:
        add_member(s)
    rt = capped_runtime(scripted_channels())
    for name in ("one", "two"):
        _send(rt, sessions, tmp_path, name)
    member_id = _rows(sessions)[0].member_id
    now = datetime.now(UTC)
    reminder = Message(
        delivery_id=10_000,
        dedupe_key="expiry:x",
        member_id=member_id,
        channel="email",
        to="m@example.com",
        parts={},
        category="marketing",
        campaign="points-expiry",
        metadata={"deadline": now + deadline_in, "time_zone": "UTC"},
    )
    # When a third, deadline-bound message comes
    kept, closed, deferred = apply_caps(rt, [reminder], now)
    # Then it waits for the slot freed in 7 days when its deadline allows, else is suppressed
    assert kept == []
    if expected == "deferred":
        [entry] = deferred
        assert entry["reason"] == "frequency_cap"
        assert timedelta(days=6, hours=23) < entry["not_before"] - now <= timedelta(days=7)
    else:
        [entry] = closed
        assert (entry["status"], entry["reason"]) == ("suppressed", "frequency_cap")
