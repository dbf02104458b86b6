"""Saved segments on real engines: save and load, preview, and snapshots of who entered and left."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from segments import (
    Reachable,
    RuleError,
    SnapshotDiff,
    load_segment,
    parse_rule,
    preview,
    save_segment,
    snapshot,
)
from store import make_sessionmaker
from store.models import Member, PointLot, Segment, SegmentMember
from tests.test_segments_corpus import ATTRIBUTES, MEMBERS, NOW, expected, insert_world

GOLD_EXPIRING = {
    "all": [
        {"field": "tier", "op": "in", "value": ["gold", "platinum"]},
        {"points_expiring": {"within": "30d"}, "op": ">=", "value": 50},
    ]
}
VIP = {"field": "attributes.vip", "op": "=", "value": True}


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions on the seeded world (SQLite, then PostgreSQL)."""
    insert_world(engine, MEMBERS)
    return make_sessionmaker(engine)


def ids_of(external_ids: set[str]) -> list[int]:
    """Member ids of the seed members with these external ids, ascending."""
    return sorted(m["id"] for m in MEMBERS if m["external_id"] in external_ids)


def test_save_then_load_returns_the_checked_rule(sessions: sessionmaker[Session]) -> None:
    """A saved segment loads back with its rule parsed with the attributes it was saved with."""
    # Given a rule on a declared attribute, saved
    with sessions.begin() as s:
        saved = save_segment(s, "vip-members", VIP, attributes=ATTRIBUTES, description="VIPs")
        assert saved.id is not None
    # When it is loaded in another session
    with sessions() as s:
        segment, rule = load_segment(s, "vip-members")
    # Then the rule and description come back
    assert parse_rule(VIP, attributes=ATTRIBUTES) == rule
    want = ("vip-members", "VIPs", None)
    assert want == (segment.name, segment.description, segment.evaluated_at)


def test_saving_again_replaces_the_rule(sessions: sessionmaker[Session]) -> None:
    """Saving under an existing name replaces its rule; there is still one segment."""
    # Given a saved segment
    with sessions.begin() as s:
        save_segment(s, "reach", {"reachable": "sms"})
    # When it is saved again with another rule
    with sessions.begin() as s:
        save_segment(s, "reach", {"reachable": "push"})
    # Then one segment holds the new rule
    with sessions() as s:
        _, rule = load_segment(s, "reach")
        count = len(s.scalars(select(Segment)).all())
    assert (Reachable(channel="push"), 1) == (rule, count)


def test_save_refuses_a_bad_rule_or_name_and_load_an_unknown_name(
    sessions: sessionmaker[Session],
) -> None:
    """A bad rule or name is refused before anything is written; an unknown name is LookupError."""
    with sessions.begin() as s:
        # Given a rule naming an undeclared attribute, and a name that is not a slug
        # When they are saved
        # Then RuleError names the problem
        with pytest.raises(RuleError, match=r'segment\.field: undeclared attribute "vip"'):
            save_segment(s, "vip-members", VIP)
        with pytest.raises(RuleError, match="is not a segment name"):
            save_segment(s, "VIP members", {"reachable": "sms"})
        # And nothing was written
        assert s.scalars(select(Segment)).first() is None
    # When an unknown segment is loaded
    # Then it is a LookupError
    with sessions() as s, pytest.raises(LookupError, match="no segment named 'nope'"):
        load_segment(s, "nope")


def test_preview_counts_samples_and_explains(sessions: sessionmaker[Session]) -> None:
    """A preview gives the count, the first members by id, the SQL and the database's plan."""
    # Given a rule and the seeded world
    rule = parse_rule(GOLD_EXPIRING)
    want = ids_of(expected(GOLD_EXPIRING))
    assert len(want) > 3
    # When it is previewed with a sample of three
    with sessions() as s:
        shown = preview(s, rule, now=NOW, sample=3)
    # Then the count and sample match the reference, the SQL holds no value, and a plan is given
    assert len(want) == shown.count
    assert want[:3] == [member_id for member_id, _, _ in shown.sample_members]
    by_id = {m["id"]: m for m in MEMBERS}
    assert [
        (i, by_id[i]["external_id"], by_id[i]["name"]) for i in want[:3]
    ] == shown.sample_members
    assert "members" in shown.sql
    assert "platinum" not in shown.sql
    assert shown.cost
    assert "point_lots" in shown.cost.lower() or "subplan" in shown.cost.lower()


def test_snapshot_reports_everyone_entered_then_who_entered_and_left(
    sessions: sessionmaker[Session],
) -> None:
    """The first snapshot enters every member; the next reports exactly the changes between."""
    # Given a saved segment
    with sessions.begin() as s:
        segment_id = save_segment(s, "gold-expiring", GOLD_EXPIRING).id
    first_members = ids_of(expected(GOLD_EXPIRING))
    # When it is evaluated for the first time
    with sessions.begin() as s:
        first = snapshot(s, s.get_one(Segment, segment_id), now=NOW)
    # Then everyone matching entered and no one left
    assert SnapshotDiff(entered=first_members, left=[], count=len(first_members)) == first
    # Given changes: one member leaves by tier, one is deleted, one newcomer gets points
    leaver, deleted = first_members[0], first_members[1]
    newcomer = next(
        m["id"] for m in MEMBERS if m["id"] not in first_members and m["tier"] == "gold"
    )
    with sessions.begin() as s:
        s.execute(update(Member).where(Member.id == leaver).values(tier="silver"))
        s.execute(update(Member).where(Member.id == deleted).values(deleted_at=NOW))
        s.add(
            PointLot(
                member_id=newcomer,
                points=500,
                redeemed=0,
                earned_at=NOW - timedelta(days=300),
                expires_at=NOW + timedelta(days=3),
            )
        )
    # When it is evaluated again (at the same instant, so only the data changed)
    with sessions.begin() as s:
        s.execute(update(Segment).values(evaluated_at=None))
        second = snapshot(s, s.get_one(Segment, segment_id), now=NOW)
    # Then exactly those changes are reported, and the stored set and evaluated_at follow
    now_members = sorted(set(first_members) - {leaver, deleted} | {newcomer})
    left = sorted([leaver, deleted])
    assert SnapshotDiff(entered=[newcomer], left=left, count=len(now_members)) == second
    with sessions() as s:
        stored = s.scalars(
            select(SegmentMember.member_id)
            .where(SegmentMember.segment_id == segment_id)
            .order_by(SegmentMember.member_id)
        ).all()
        evaluated_at = s.get_one(Segment, segment_id).evaluated_at
    assert (now_members, NOW) == (list(stored), evaluated_at)


def test_snapshot_again_without_changes_reports_nothing(sessions: sessionmaker[Session]) -> None:
    """Evaluating twice with nothing changed enters and leaves no one."""
    # Given a segment evaluated once
    with sessions.begin() as s:
        segment = save_segment(s, "reach-push", {"reachable": "push"})
        count = snapshot(s, segment, now=NOW).count
    # When it is evaluated again
    with sessions.begin() as s:
        again = snapshot(s, s.get_one(Segment, segment.id), now=NOW)
    # Then no one entered or left
    assert SnapshotDiff(entered=[], left=[], count=count) == again


def test_deleting_a_segment_deletes_its_members(sessions: sessionmaker[Session]) -> None:
    """Segment members go with their segment (foreign key cascade)."""
    # Given an evaluated segment
    with sessions.begin() as s:
        segment = save_segment(s, "reach-email", {"reachable": "email"})
        assert snapshot(s, segment, now=NOW).count > 0
    # When the segment is deleted
    with sessions.begin() as s:
        s.execute(delete(Segment).where(Segment.id == segment.id))
    # Then none of its members remain
    with sessions() as s:
        assert s.scalars(select(SegmentMember)).first() is None
