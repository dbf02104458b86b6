"""store.bulk: page-sized inserts and id lists behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Table, select, text
from sqlalchemy.exc import DBAPIError, StatementError

from store import (
    CampaignVersion,
    Delivery,
    Member,
    ProviderEvent,
    make_engine,
    make_sessionmaker,
)
from store.bulk import among, insert_ignore_many, stream_tuples, update_many
from tests.support import add_member, create, write_campaign

deliveries = cast(Table, Delivery.__table__)
events = cast(Table, ProviderEvent.__table__)
NOW = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def _delivery_rows(engine: Engine, tmp_path: Path, n: int) -> list[dict[str, Any]]:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        members = [add_member(session, tier="gold").id for _ in range(n)]
    created = create(sessions, write_campaign(tmp_path))
    with sessions.begin() as session:
        version_id = session.scalar(
            select(CampaignVersion.id).where(CampaignVersion.campaign_id == created.campaign_id)
        )
    return [
        {
            "dedupe_key": f"bulk:{member_id}",
            "campaign_id": created.campaign_id,
            "campaign_version_id": version_id,
            "run_id": None,
            "member_id": member_id,
            "category": "marketing",
            "channels": "email,sms",
            "channel": None if i % 2 else "email",
            "status": "pending" if i % 3 else "deferred",
            "attempts": 0,
            "resend_on_ambiguous": False,
            "not_before": None if i % 3 else NOW + timedelta(hours=i),
            "reason": None,
            "detail": None if i % 3 else f"member-local {i}",
            "enqueued_at": NOW,
            "created_at": NOW,
            "updated_at": NOW,
            "payload": None if i % 2 else {"points": i, "date": "2026-03-31", "note": "a'b\"c"},
        }
        for i, member_id in enumerate(members)
    ]


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    columns = [c for c in deliveries.c if c.name != "id"]
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*columns).order_by(deliveries.c.dedupe_key))]


def test_rows_land_as_given_and_conflicts_return_nothing(engine: Engine, tmp_path: Path) -> None:
    rows = _delivery_rows(engine, tmp_path, 7)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        first = insert_ignore_many(
            session, deliveries, rows[:4], ["dedupe_key"], [deliveries.c.id, deliveries.c.status]
        )
    with sessions.begin() as session:
        second = insert_ignore_many(
            session, deliveries, rows, ["dedupe_key"], [deliveries.c.member_id]
        )
    assert sorted(status for _, status in first) == sorted(r["status"] for r in rows[:4])
    assert sorted(m for (m,) in second) == sorted(r["member_id"] for r in rows[4:])
    with sessions() as session:
        stored = {d.dedupe_key: d for d in session.scalars(select(Delivery))}
    assert set(stored) == {r["dedupe_key"] for r in rows}
    for row in rows:
        got = stored[row["dedupe_key"]]
        for name, value in row.items():
            assert getattr(got, name) == value, (row["dedupe_key"], name)


def test_same_result_as_executemany(engine: Engine, tmp_path: Path) -> None:
    """JSON null versus SQL NULL, time zones, defaults: nothing differs from the plain path."""
    from store import insert_ignore

    rows = _delivery_rows(engine, tmp_path, 6)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        insert_ignore_many(session, deliveries, rows, ["dedupe_key"])
    bulk = _stored(engine)
    with sessions.begin() as session:
        session.execute(deliveries.delete())
        dialect = session.get_bind().dialect.name
        session.execute(insert_ignore(dialect, deliveries, None, ["dedupe_key"]), rows)
    assert bulk == _stored(engine)


def test_identical_rows_and_a_single_row(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    same = {"provider": "twilio", "event_id": "E1", "received_at": NOW}
    with sessions.begin() as session:
        inserted = insert_ignore_many(
            session, events, [same, dict(same)], ["provider", "event_id"], [events.c.event_id]
        )
        single = insert_ignore_many(
            session, events, [{**same, "event_id": "E2"}], ["provider", "event_id"]
        )
    assert inserted == [("E1",)]
    assert single == []
    with sessions() as session:
        assert sorted(session.scalars(select(ProviderEvent.event_id))) == ["E1", "E2"]


def test_bad_rows_are_refused_before_anything_is_written(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    good = {"provider": "twilio", "event_id": "E1", "received_at": NOW}
    with sessions.begin() as session:
        with pytest.raises(ValueError, match=r"row 2 of 2 has columns"):
            insert_ignore_many(session, events, [good, {"provider": "x"}], ["provider", "event_id"])
        with pytest.raises(ValueError, match=r"provider_events has no column \['colour'\]"):
            insert_ignore_many(session, events, [{**good, "colour": 1}], ["provider", "event_id"])
        assert insert_ignore_many(session, events, [], ["provider", "event_id"]) == []
    naive = [{**good, "received_at": datetime(2026, 3, 1)}, {**good, "event_id": "E2"}]
    with sessions.begin() as session, pytest.raises(StatementError, match="naive datetime"):
        insert_ignore_many(session, events, naive, ["provider", "event_id"])
    with sessions() as session:
        assert session.scalar(select(ProviderEvent.id)) is None
        assert session.scalar(select(Member.id)) is None


def _stored_rows(engine: Engine, tmp_path: Path, n: int) -> tuple[list[dict[str, Any]], list[int]]:
    """``n`` delivery rows, inserted: the rows and their ids in order."""
    rows = _delivery_rows(engine, tmp_path, n)
    with make_sessionmaker(engine).begin() as session:
        inserted = insert_ignore_many(session, deliveries, rows, ["dedupe_key"], [deliveries.c.id])
    return rows, sorted(i for (i,) in inserted)


def test_update_many_sets_each_rows_own_values_where_the_guard_holds(
    engine: Engine, tmp_path: Path
) -> None:
    """Own values per row, shared values on all, a guard that spares a row; both dialects."""
    rows, ids = _stored_rows(engine, tmp_path, 6)
    sessions = make_sessionmaker(engine)
    later = NOW + timedelta(minutes=5)
    given = [
        {"id": ids[0], "provider_message_id": "SG-0", "detail": None},
        {"id": ids[1], "provider_message_id": None, "detail": "second"},
        {"id": ids[2], "provider_message_id": "SG-2", "detail": 'it\'s "quoted"'},
        {"id": ids[3], "provider_message_id": "SG-3", "detail": None},  # spared by the guard
    ]
    with sessions.begin() as session:
        update_many(
            session,
            deliveries,
            given,
            where=[deliveries.c.dedupe_key != rows[3]["dedupe_key"]],
            values={"status": "sent", "sent_at": later, "updated_at": later},
        )
    with sessions() as session:
        stored = {d.id: d for d in session.scalars(select(Delivery))}
    for entry in given[:3]:
        got = stored[entry["id"]]
        assert (got.status, got.sent_at, got.updated_at) == ("sent", later, later)
        assert (got.provider_message_id, got.detail) == (
            entry["provider_message_id"],
            entry["detail"],
        )
    for untouched in ids[3:]:
        assert stored[untouched].status in {"pending", "deferred"}
        assert stored[untouched].provider_message_id is None
        assert stored[untouched].updated_at == NOW


def test_update_many_with_identical_rows_a_single_row_and_none(
    engine: Engine, tmp_path: Path
) -> None:
    _, ids = _stored_rows(engine, tmp_path, 3)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        update_many(
            session, deliveries, [{"id": ids[0], "reason": "r"}, {"id": ids[1], "reason": "r"}]
        )
        update_many(session, deliveries, [{"id": ids[2], "reason": "only"}])
        update_many(session, deliveries, [])
    with sessions() as session:
        reasons = {i: r for i, r in session.execute(select(Delivery.id, Delivery.reason))}
    assert reasons == {ids[0]: "r", ids[1]: "r", ids[2]: "only"}


def test_update_many_refuses_bad_rows_before_writing(engine: Engine, tmp_path: Path) -> None:
    _, [first, _] = _stored_rows(engine, tmp_path, 2)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        with pytest.raises(ValueError, match=r"row 2 of 2 has columns"):
            update_many(session, deliveries, [{"id": first, "reason": "x"}, {"id": first}])
        with pytest.raises(ValueError, match=r"deliveries has no column \['colour'\]"):
            update_many(session, deliveries, [{"id": first, "colour": 1}])
        with pytest.raises(ValueError, match=r"rows have no 'id'"):
            update_many(session, deliveries, [{"reason": "x"}])
    naive = [{"id": first, "sent_at": datetime(2026, 3, 1)}]
    with sessions.begin() as session, pytest.raises(StatementError, match="naive datetime"):
        update_many(session, deliveries, naive)
    with sessions() as session:
        assert session.scalar(select(Delivery.sent_at).where(Delivery.id == first)) is None


@pytest.mark.parametrize("size", [0, 1, 3, 1500])
def test_among_selects_exactly_the_listed_values(engine: Engine, size: int) -> None:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        session.execute(
            events.insert(),
            [{"provider": "p", "event_id": f"E{i}", "received_at": NOW} for i in range(3100)],
        )
    wanted = [f"E{i}" for i in range(0, 2 * size, 2)] + ["missing"]
    with sessions() as session:
        found = session.scalars(
            select(ProviderEvent.event_id).where(among(session, ProviderEvent.event_id, wanted))
        ).all()
        ids = session.scalars(select(ProviderEvent.id).order_by(ProviderEvent.id).limit(5)).all()
        by_id = session.scalars(
            select(ProviderEvent.id).where(among(session, ProviderEvent.id, iter(ids[1:4])))
        ).all()
    assert sorted(found) == sorted(wanted[:-1])
    assert sorted(by_id) == ids[1:4]


def test_stream_tuples_pages_plain_tuples_with_binds_typed(engine: Engine) -> None:
    # Given 25 events a minute apart
    with engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {"provider": "p", "event_id": f"E{i:02}", "received_at": NOW + timedelta(minutes=i)}
                for i in range(25)
            ],
        )
    # When those from minute 10 on are streamed 4 at a time, the bound instant
    # given in another zone (UTCDateTime converts it, as in any execute)
    since = (NOW + timedelta(minutes=10)).astimezone(timezone(timedelta(hours=-5)))
    query = (
        select(ProviderEvent.event_id, ProviderEvent.provider)
        .where(ProviderEvent.received_at >= since)
        .order_by(ProviderEvent.event_id)
    )
    with engine.begin() as conn:
        pages = [list(page) for page in stream_tuples(conn, query, 4)]
    # Then they come in pages of at most 4 rows, in order
    assert [len(page) for page in pages] == [4, 4, 4, 3]
    assert [row for page in pages for row in page] == [(f"E{i:02}", "p") for i in range(10, 25)]
    # And a naive instant is refused as SQLAlchemy refuses it
    naive = select(ProviderEvent.id).where(ProviderEvent.received_at >= datetime(2026, 3, 1))
    with engine.begin() as conn, pytest.raises(StatementError, match="naive datetime"):
        next(stream_tuples(conn, naive, 4))


@pytest.mark.postgres
def test_stream_tuples_closes_its_server_side_cursor_when_closed_early(pg_url: str) -> None:
    pg_engine = make_engine(pg_url)
    with pg_engine.begin() as conn:
        conn.execute(
            events.insert(),
            [{"provider": "p", "event_id": f"E{i}", "received_at": NOW} for i in range(50)],
        )
    with pg_engine.begin() as conn:
        pages = stream_tuples(conn, select(ProviderEvent.id), 10)
        first = next(pages)
        during = conn.scalar(text("SELECT count(*) FROM pg_cursors"))
        pages.close()
        after = conn.scalar(text("SELECT count(*) FROM pg_cursors"))
    # And a failing query raises SQLAlchemy's error, as any execute would
    failing = select((ProviderEvent.id / (ProviderEvent.id - ProviderEvent.id)).label("x"))
    with pg_engine.begin() as conn, pytest.raises(DBAPIError, match="division by zero"):
        list(stream_tuples(conn, failing, 10))
    pg_engine.dispose()
    assert (len(first), during, after) == (10, 1, 0)
