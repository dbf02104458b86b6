"""The member generator behind the demo, the simulated month and the benchmarks."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from loyalcast.demo.seed import seed_members
from store import Consent, Member, PointLot, make_engine, make_sessionmaker

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def test_members_come_with_the_spreads_of_a_real_program_on_either_engine(database_url):
    """COPY on PostgreSQL, INSERT on SQLite: the same rows, ids after those already stored."""
    engine = make_engine(database_url)
    first = seed_members(engine, 50, seed=1, now=NOW)
    second = seed_members(engine, 400, seed=2, now=NOW, lots=(3, 5))
    with make_sessionmaker(engine).begin() as session:
        # an ORM insert after the generator gets the next id (PostgreSQL's sequence was moved)
        later = Member(external_id="later", locale="en", attributes={})
        session.add(later)
        session.flush()
        assert later.id == 451
        members = session.scalars(select(Member).where(Member.id.in_(second))).all()
        lots = Counter(
            session.scalars(select(PointLot.member_id).where(PointLot.member_id.in_(second)))
        )
        expiries = session.scalars(
            select(PointLot.expires_at).where(PointLot.member_id.in_(second))
        ).all()
        consented = session.scalar(
            select(func.count()).where(Consent.channel == "email", Consent.status == "opted_in")
        )
    engine.dispose()
    assert (first, second) == (range(1, 51), range(51, 451))
    assert len(members) == 400
    assert set(lots.values()) <= {3, 4, 5}
    assert len(lots) == 400
    assert all(NOW < at <= NOW + timedelta(days=366) for at in expiries)
    assert 0.05 < sum(m.phone is None for m in members) / 400 < 0.16
    assert len({m.time_zone for m in members}) >= 8
    assert {m.tier for m in members} == {"basic", "silver", "gold", "platinum"}
    assert all(isinstance(m.attributes, dict) and m.attributes for m in members)
    assert (consented or 0) > 300
