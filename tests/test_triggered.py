"""Segment triggers: ``kind: triggered``, ``on: entered_segment NAME``.

The scheduler's tick (``ensure_runs``) snapshots the watched segment and writes
a run per campaign for the members who entered; time moves with ``set_clock``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.ticks import tick
from segments import SnapshotDiff, save_segment
from store import Campaign, CampaignRun, Delivery, Member, set_clock
from store.models import Segment
from workers import CampaignFileError, parse_campaign, triggers
from workers.catalog import create_campaign
from workers.control import pause_campaign
from workers.delivery import deliver_batch
from workers.occurrences import ensure_runs
from workers.planning import plan_run
from workers.sweeping import sweep
from workers.triggers import snapshot_and_trigger

from .support import add_member, runtime_for, scripted_channels, sessions_for

TRIGGERED = """\
name: {name}
kind: triggered
category: marketing
on: entered_segment {segment}
check_every: {every}
channels: {channels}
template: winter-double-points
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    previous = set_clock(c)
    yield c
    set_clock(previous)


def _platinum(sessions: sessionmaker[Session], name: str = "platinum") -> None:
    with sessions.begin() as s:
        save_segment(s, name, {"field": "tier", "op": "=", "value": "platinum"})


def _campaign(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    name: str = "vip-welcome",
    *,
    segment: str = "platinum",
    every: str = "1h",
    channels: str = "[email]",
    extra: str = "",
) -> int:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        TRIGGERED.format(name=name, segment=segment, every=every, channels=channels) + extra
    )
    return create_campaign(sessions, path).campaign_id


def _set_tier(sessions: sessionmaker[Session], member_id: int, tier: str) -> None:
    with sessions.begin() as s:
        s.execute(update(Member).where(Member.id == member_id).values(tier=tier))


def _tick(sessions: sessionmaker[Session], clock: Clock, at: datetime) -> int:
    clock.now = at
    return ensure_runs(sessions, at)


def _runs(sessions: sessionmaker[Session]) -> list[tuple[str, str, list[int]]]:
    """(campaign, occurrence, member ids) per run, in order."""
    with sessions() as s:
        found = []
        for run_id, name, occurrence in s.execute(
            select(CampaignRun.id, Campaign.name, CampaignRun.occurrence)
            .join(Campaign, Campaign.id == CampaignRun.campaign_id)
            .order_by(CampaignRun.id)
        ):
            members = s.scalars(
                select(Delivery.member_id).where(Delivery.run_id == run_id).order_by(Delivery.id)
            )
            found.append((name, occurrence, list(members)))
        return found


def _broker() -> StubBroker:
    broker = StubBroker()
    broker.declare_queue("plan")
    broker.declare_queue("deliver")
    return broker


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


T0 = _at("2026-03-01T09:00")


def test_members_already_in_the_segment_did_not_enter_and_a_newcomer_is_sent(
    database_url, tmp_path, clock
):
    """The first snapshot is a baseline; a member who enters later gets one message."""
    # Given two platinum members, and a campaign on the platinum segment
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        old = [add_member(s, tier="platinum").id for _ in range(2)]
        newcomer = add_member(s, tier="gold").id
    campaign_id = _campaign(sessions, tmp_path)
    # When the scheduler ticks: the baseline, nobody triggered
    assert _tick(sessions, clock, T0) == 0
    assert _runs(sessions) == []
    # When a gold member becomes platinum and the next snapshot is due
    _set_tier(sessions, newcomer, "platinum")
    assert _tick(sessions, clock, T0 + timedelta(minutes=30)) == 0  # not yet: check_every 1h
    assert _tick(sessions, clock, T0 + timedelta(hours=1)) == 1
    # Then one run holds the newcomer alone, keyed by campaign, member and run
    ((_, occurrence, members),) = _runs(sessions)
    assert (occurrence, members) == ((T0 + timedelta(hours=1)).isoformat(), [newcomer])
    with sessions() as s:
        row = s.scalars(select(Delivery)).one()
        run = s.scalars(select(CampaignRun)).one()
    assert row.dedupe_key == f"trigger:{campaign_id}:{newcomer}:{run.id}"
    assert row.payload == {"segment": "platinum", "entered_at": occurrence}
    assert newcomer not in old
    # When the run is claimed, planned and delivered
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    assert tick(sessions, _broker()) == [run.id]
    plan_run(rt, run.id)
    deliver_batch(rt, [row.id])
    # Then the newcomer has the message and the run is complete
    assert [m.member_id for m in channels["email"].sent] == [newcomer]
    with sessions() as s:
        assert s.scalar(select(CampaignRun.status)) == "completed"


def test_the_plan_job_enqueues_the_rows_a_trigger_wrote(database_url, tmp_path, clock):
    """A triggered run's plan job sends the rows to the deliver queue once."""
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        ids = [add_member(s, tier="gold").id for _ in range(3)]
    _campaign(sessions, tmp_path)
    _tick(sessions, clock, T0)
    for member_id in ids:
        _set_tier(sessions, member_id, "platinum")
    broker = _broker()
    clock.now = T0 + timedelta(hours=1)
    (run_id,) = tick(sessions, broker)  # writes the run and claims it in one tick
    rt = runtime_for(database_url, tmp_path, broker=broker)
    plan_run(rt, run_id)
    plan_run(rt, run_id)  # a second plan job changes nothing
    jobs = [Message.decode(raw).args[0] for raw in broker.queues["deliver"].queue]
    with sessions() as s:
        rows = list(s.scalars(select(Delivery.id).order_by(Delivery.id)))
    assert jobs == [rows]
    with sessions() as s:
        assert s.scalar(select(CampaignRun.status)) == "planned"


def test_campaigns_on_one_segment_share_one_snapshot_and_see_the_same_entries(
    database_url, tmp_path, clock
):
    """Two campaigns on one segment: one snapshot a tick, each gets the member who entered."""
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        member = add_member(s, tier="gold").id
    _campaign(sessions, tmp_path, "vip-email", every="1h")
    _campaign(sessions, tmp_path, "vip-sms", every="15m", channels="[sms]")
    _tick(sessions, clock, T0)
    _set_tier(sessions, member, "platinum")
    # The segment is snapshotted at the shortest check_every (15m) for both
    assert _tick(sessions, clock, T0 + timedelta(minutes=15)) == 2
    at = (T0 + timedelta(minutes=15)).isoformat()
    assert _runs(sessions) == [("vip-email", at, [member]), ("vip-sms", at, [member])]
    with sessions() as s:
        assert s.scalar(select(Segment.evaluated_at)) == T0 + timedelta(minutes=15)


def test_a_member_who_leaves_and_enters_again_is_triggered_again(database_url, tmp_path, clock):
    """Entering, leaving and entering again: two runs, two keys, two messages."""
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        member = add_member(s, tier="gold").id
    _campaign(sessions, tmp_path)
    _tick(sessions, clock, T0)
    for hour, tier in ((1, "platinum"), (2, "gold"), (3, "platinum")):
        _set_tier(sessions, member, tier)
        _tick(sessions, clock, T0 + timedelta(hours=hour))
    runs = _runs(sessions)
    assert [(o, m) for _, o, m in runs] == [
        ((T0 + timedelta(hours=1)).isoformat(), [member]),
        ((T0 + timedelta(hours=3)).isoformat(), [member]),
    ]
    with sessions() as s:
        keys = list(s.scalars(select(Delivery.dedupe_key)))
    assert len(set(keys)) == 2


def test_a_campaign_created_later_takes_its_own_baseline(database_url, tmp_path, clock):
    """Members who entered before a campaign started watching do not trigger it."""
    # Given a campaign already watching, and a member who enters
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        first = add_member(s, tier="gold").id
        second = add_member(s, tier="gold").id
    _campaign(sessions, tmp_path, "older")
    _tick(sessions, clock, T0)
    _set_tier(sessions, first, "platinum")
    # When a second campaign is created before the next snapshot
    clock.now = T0 + timedelta(minutes=10)
    _campaign(sessions, tmp_path, "newer")
    _tick(sessions, clock, T0 + timedelta(hours=1))
    # Then only the older campaign is triggered by that entry
    assert [(c, m) for c, _, m in _runs(sessions)] == [("older", [first])]
    # And a later entry triggers both
    _set_tier(sessions, second, "platinum")
    _tick(sessions, clock, T0 + timedelta(hours=2))
    assert [(c, m) for c, _, m in _runs(sessions)][1:] == [("older", [second]), ("newer", [second])]


def test_a_manual_snapshot_triggers_the_campaigns_watching(database_url, tmp_path, clock):
    """`segments snapshot` does not swallow entries: it triggers the campaigns itself."""
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        member = add_member(s, tier="gold").id
    _campaign(sessions, tmp_path)
    _tick(sessions, clock, T0)
    _set_tier(sessions, member, "platinum")
    clock.now = T0 + timedelta(minutes=5)
    with sessions.begin() as s:
        segment = s.scalars(select(Segment)).one()
        result = snapshot_and_trigger(s, segment)
    assert (result.diff.entered, list(result.runs)) == ([member], ["vip-welcome"])
    assert [m for _, _, m in _runs(sessions)] == [[member]]
    # The next tick finds the segment freshly evaluated
    assert _tick(sessions, clock, T0 + timedelta(minutes=30)) == 0


def test_a_member_reported_both_left_and_entered_is_not_triggered(
    database_url, tmp_path, clock, monkeypatch
):
    """Ordering caveat: reported both left and entered means in the segment all along."""
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        stayed = add_member(s, tier="platinum").id
        entered = add_member(s, tier="platinum").id
    _campaign(sessions, tmp_path)
    _tick(sessions, clock, T0)
    real_snapshot = triggers.snapshot

    def racing_snapshot(session, segment, *, now=None):
        real_snapshot(session, segment, now=now)
        return SnapshotDiff(entered=[stayed, entered], left=[stayed], count=2)

    monkeypatch.setattr(triggers, "snapshot", racing_snapshot)
    _tick(sessions, clock, T0 + timedelta(hours=1))
    assert [m for _, _, m in _runs(sessions)] == [[entered]]


def _rich_and_poor_entered(
    database_url: str, tmp_path: Path, clock: Clock
) -> tuple[sessionmaker[Session], int, int]:
    """A campaign on ``platinum`` narrowed to 1,000+ points; a rich and a poor member
    entered before the next check, which is now due. Returns (sessions, rich, poor)."""
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        rich = add_member(s, tier="gold", points_balance=5000).id
        poor = add_member(s, tier="gold", points_balance=10).id
    _campaign(
        sessions,
        tmp_path,
        extra='segment: {field: points_balance, op: ">=", value: 1000}\n',
    )
    _tick(sessions, clock, T0)
    _set_tier(sessions, rich, "platinum")
    _set_tier(sessions, poor, "platinum")
    clock.now = T0 + timedelta(hours=1)
    return sessions, rich, poor


def test_the_campaigns_own_segment_narrows_who_is_triggered(database_url, tmp_path, clock):
    """An entered member outside the campaign's segment is suppressed, reason not_in_segment."""
    sessions, rich, poor = _rich_and_poor_entered(database_url, tmp_path, clock)
    (run_id,) = tick(sessions, _broker())
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    with sessions() as s:
        rows = {r.member_id: r for r in s.scalars(select(Delivery))}
    assert (rows[poor].status, rows[poor].reason) == ("suppressed", "not_in_segment")
    assert rows[rich].status == "pending"
    deliver_batch(rt, [r.id for r in rows.values()])
    assert [m.member_id for m in channels["email"].sent] == [rich]


def test_a_row_the_sweeper_releases_before_its_plan_is_still_narrowed(
    database_url, tmp_path, clock
):
    """The tick writes a run's rows before its plan narrows them; a sweep in between
    enqueues them as it would any row never enqueued. The send-time check narrows them."""
    sessions, rich, poor = _rich_and_poor_entered(database_url, tmp_path, clock)
    tick(sessions, _broker())  # the run is claimed; its plan job has not run yet
    # When a sweep runs first, and a worker takes the rows it enqueued
    broker = _broker()
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, broker=broker, channels=channels)
    assert sweep(rt).requeued == 2
    [message] = broker.queues["deliver"].queue
    deliver_batch(rt, Message.decode(message).args[0])
    # Then only the member inside the campaign's segment was sent
    assert [m.member_id for m in channels["email"].sent] == [rich]
    with sessions() as s:
        rows = {r.member_id: r for r in s.scalars(select(Delivery))}
    assert (rows[poor].status, rows[poor].reason) == ("suppressed", "not_in_segment")
    rt.close()


def test_channels_all_keys_each_channel(database_url, tmp_path, clock):
    """With channels: all, an entered member gets one row per channel, the channel in the key."""
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        member = add_member(s, tier="gold").id
    campaign_id = _campaign(sessions, tmp_path, channels="all")
    _tick(sessions, clock, T0)
    _set_tier(sessions, member, "platinum")
    _tick(sessions, clock, T0 + timedelta(hours=1))
    with sessions() as s:
        run_id = s.scalar(select(CampaignRun.id))
        keys = set(s.scalars(select(Delivery.dedupe_key)))
    assert keys == {
        f"trigger:{campaign_id}:{member}:{run_id}:{c}"
        for c in ("sms", "email", "push", "direct_mail")
    }


def test_a_paused_campaign_is_not_triggered(database_url, tmp_path, clock):
    """Members who enter while a triggered campaign is paused are not sent later."""
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        member = add_member(s, tier="gold").id
    _campaign(sessions, tmp_path)
    _tick(sessions, clock, T0)
    pause_campaign(sessions, "vip-welcome")
    _set_tier(sessions, member, "platinum")
    _tick(sessions, clock, T0 + timedelta(hours=1))
    assert _runs(sessions) == []


def test_a_triggered_campaign_must_name_a_saved_segment(database_url, tmp_path):
    """Creating a campaign on a segment nobody saved is refused, naming the key."""
    sessions = sessions_for(database_url)
    with pytest.raises(CampaignFileError) as info:
        _campaign(sessions, tmp_path, segment="nobody-saved-this")
    assert "on: no saved segment named 'nobody-saved-this'" in str(info.value)


def test_check_every_survives_the_stored_spec():
    """A stored spec (durations as ISO 8601) reads back to the same check_every."""
    text = TRIGGERED.format(name="t", segment="s", every="90m", channels="[email]")
    spec = parse_campaign(text, "t.yaml")
    stored = spec.model_dump(mode="json")
    assert stored["check_every"] == "PT1H30M"
    assert type(spec).model_validate(stored).snapshot_every == timedelta(minutes=90)


def test_a_member_who_left_before_the_send_is_not_sent(database_url, tmp_path, clock):
    """The trigger is checked again at send time: left since (per the latest snapshot), no send."""
    # Given a triggered row for two members who entered
    sessions = sessions_for(database_url)
    _platinum(sessions)
    with sessions.begin() as s:
        stays = add_member(s, tier="gold").id
        leaves = add_member(s, tier="gold").id
    _campaign(sessions, tmp_path)
    _tick(sessions, clock, T0)
    _set_tier(sessions, stays, "platinum")
    _set_tier(sessions, leaves, "platinum")
    clock.now = T0 + timedelta(hours=1)
    (run_id,) = tick(sessions, _broker())
    channels = scripted_channels()
    rt = runtime_for(database_url, tmp_path, channels=channels)
    plan_run(rt, run_id)
    # When one of them leaves the segment and a snapshot sees it before the rows are sent
    _set_tier(sessions, leaves, "gold")
    clock.now = T0 + timedelta(hours=1, minutes=5)
    with sessions.begin() as s:
        snapshot_and_trigger(s, s.scalars(select(Segment)).one())
    with sessions() as s:
        rows = {r.member_id: r.id for r in s.scalars(select(Delivery))}
    deliver_batch(rt, list(rows.values()))
    # Then only the member still in the segment is sent; the other's reason is recorded
    assert [m.member_id for m in channels["email"].sent] == [stays]
    with sessions() as s:
        row = s.get(Delivery, rows[leaves])
        assert (row.status, row.reason) == ("suppressed", "left_segment")
