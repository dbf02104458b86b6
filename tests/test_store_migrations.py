"""Migrations on PostgreSQL: the ledger's indexes of open work (0008, 0009), one upgrade at a time.

The sweeper, the lease expiry, retries, pause, resume, cancel, campaign
status and the provider webhooks each look for a few rows of one kind (or
one campaign's) among millions. Their
indexes are partial: they hold only rows in the statuses (or with the
column) they are asked about, so a sent row costs no entry in them. These
tests check what the indexes are, that each query of open work can still be
answered through an index (PostgreSQL must prove the predicate from the
query's own conditions, bound parameters included), that a sweep reads no
row it does not re-enqueue, that the migrations go
down and up again, and that processes starting together upgrade one after
another (``store.migrate.migration_lock``).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, text, update

from scheduler import claim_due_runs
from store import Delivery, DeliveryStatus, make_engine, utcnow
from store.migrate import MIGRATION_LOCK, alembic_config, current_revision, upgrade
from workers.catalog import campaign_status
from workers.control import cancel_campaign, pause_campaign, resume_campaign
from workers.feedback import apply_provider_status
from workers.planning import plan_run
from workers.retry import retry_failed
from workers.sweeping import sweep

from .conftest import own_pg_database
from .support import add_member, create, runtime_for, sessions_for, write_campaign

pytestmark = pytest.mark.postgres

#: index name -> the rows it holds: the statuses, or the column that is not null
PARTIAL: dict[str, set[str] | str] = {
    "ix_deliveries_status_enqueued_at_not_before": {"pending", "deferred"},
    "ix_deliveries_status_not_before": {"pending", "deferred", "failed"},
    "ix_deliveries_status_lease_until": {"sending"},
    "ix_deliveries_provider_message_id": "provider_message_id IS NOT NULL",
    "ix_deliveries_enrollment_id": "enrollment_id IS NOT NULL",
}
FULL = {"ix_deliveries_run_id_status", "ix_deliveries_member_id_created_at"}
#: the names the same indexes had before 0009 (the sweeper's index gained ``not_before``)
BEFORE_0009 = {"ix_deliveries_status_enqueued_at_not_before": "ix_deliveries_status_enqueued_at"}


def _indexes(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'deliveries'")
            ).all()
        )


def _holds(definition: str) -> set[str] | str | None:
    """What an index's ``WHERE`` admits: the statuses it names, or its condition; None if whole."""
    _, where, predicate = definition.partition(" WHERE ")
    if not where:
        return None
    if "status" in predicate:
        return set(re.findall(r"'(\w+)'", predicate))
    return predicate.strip("()")


def test_the_indexes_of_open_work_hold_only_open_rows(pg_url):
    """Five indexes are partial, each on what its queries ask for; the rest are whole."""
    engine = make_engine(pg_url)
    try:
        indexes = _indexes(engine)
    finally:
        engine.dispose()
    assert {name: _holds(indexes[name]) for name in PARTIAL} == PARTIAL
    assert {name: _holds(indexes[name]) for name in FULL} == dict.fromkeys(FULL)


@contextlib.contextmanager
def _statements_on_deliveries() -> Iterator[list[tuple[str, object]]]:
    """Every statement any engine sends that reads or writes ``deliveries``."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "deliveries" in statement and not executemany:
            seen.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def _plans(pg_url: str, statements: list[tuple[str, object]]) -> list[tuple[str, str]]:
    """(statement, plan) of each statement, planned as if no table could be read whole."""
    engine = make_engine(pg_url)
    plans = []
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            for statement, parameters in statements:
                rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
                plans.append((statement, "\n".join(row[0] for row in rows)))
            conn.rollback()
    finally:
        engine.dispose()
    return plans


def _planned(pg_url: str, tmp_path, members: int, **settings: Any) -> tuple:
    """(sessions, runtime) after ``test-broadcast`` planned one pending row per member."""
    sessions = sessions_for(pg_url)
    with sessions.begin() as s:
        for _ in range(members):
            add_member(s)
    created = create(sessions, write_campaign(tmp_path))
    assert claim_due_runs(sessions) == [created.run_id]
    rt = runtime_for(pg_url, tmp_path, **settings)
    plan_run(rt, created.run_id)
    return sessions, rt


def test_the_queries_of_open_work_are_answered_through_an_index(pg_url, tmp_path):
    """The sweeper, leases, retry, pause, resume, cancel, status, webhooks never scan the ledger."""
    # Given a planned broadcast with rows pending, deferred, sending past their
    # lease, failed, and sent with a provider id
    sessions, rt = _planned(pg_url, tmp_path, members=5)
    now = utcnow()
    with sessions.begin() as s:
        ids = sorted(s.scalars(text("SELECT id FROM deliveries")).all())
        states = [
            {"status": DeliveryStatus.DEFERRED, "not_before": now - timedelta(minutes=1)},
            {"status": DeliveryStatus.SENDING, "lease_until": now - timedelta(minutes=1)},
            {"status": DeliveryStatus.FAILED, "reason": "provider:500"},
            {"status": DeliveryStatus.SENT, "provider_message_id": "SM123"},
        ]
        for delivery_id, values in zip(ids, states, strict=False):
            s.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))
    # When each of them runs, its statements recorded
    with _statements_on_deliveries() as statements:
        sweep(rt)
        with sessions.begin() as s:
            apply_provider_status(s, provider_message_id="SM123", status=DeliveryStatus.DELIVERED)
        retry_failed(sessions, "test-broadcast")
        pause_campaign(sessions, "test-broadcast")
        resume_campaign(sessions, "test-broadcast")
        cancel_campaign(sessions, "test-broadcast", timeout=5)
        campaign_status(sessions, "test-broadcast", rates={})
    # Then, with sequential scans off, none of them reads the table whole, and
    # each partial index serves at least one of them
    plans = _plans(pg_url, statements)
    assert len(plans) >= 8
    scanned = [(s, p) for s, p in plans if "Seq Scan on deliveries" in p]
    assert scanned == []
    used = {name for _, plan in plans for name in PARTIAL if name in plan}
    assert used == set(PARTIAL)


def _rows_discarded(plan: dict) -> int:
    """Rows of ``deliveries`` a plan read and threw away (filters and rechecks, every node)."""
    discarded = 0
    if plan.get("Relation Name") == "deliveries":
        for key in ("Rows Removed by Filter", "Rows Removed by Index Recheck"):
            discarded += plan.get(key, 0) * plan.get("Actual Loops", 1)
    return discarded + sum(_rows_discarded(child) for child in plan.get("Plans", []))


def test_a_sweep_reads_only_the_rows_it_requeues(pg_url, tmp_path):
    """Rows in flight and rows waiting for a later time are not read by the sweeper at all."""
    # Given a broadcast mostly in flight (enqueued a moment ago), many rows
    # deferred to later, and a few rows of each kind the sweeper is for
    sessions, rt = _planned(pg_url, tmp_path, members=215, lease_seconds=60)
    now = utcnow()
    kinds = [
        (100, {"enqueued_at": now - timedelta(seconds=5)}),  # in flight
        (100, {"status": DeliveryStatus.DEFERRED, "not_before": now + timedelta(hours=1)}),
        (5, {"enqueued_at": now - timedelta(minutes=5)}),  # its job lost
        (5, {"status": DeliveryStatus.DEFERRED, "not_before": now - timedelta(seconds=1)}),
        (5, {}),  # released by an expired lease (resend): never enqueued since
    ]
    with sessions.begin() as s:
        ids = iter(sorted(s.scalars(text("SELECT id FROM deliveries")).all()))
        for count, values in kinds:
            chunk = [next(ids) for _ in range(count)]
            s.execute(
                update(Delivery)
                .where(Delivery.id.in_(chunk))
                .values(**{"enqueued_at": None, "not_before": None, **values})
            )
        s.execute(text("ANALYZE deliveries"))
    # When the sweeper runs, the statements it looks for due rows with recorded
    with _statements_on_deliveries() as statements:
        assert sweep(rt).requeued == 15
    lookups = [(sql, p) for sql, p in statements if sql.startswith("SELECT deliveries.id")]
    assert lookups
    # Then, planned as on a ledger too big to read whole, none of them reads a
    # row it does not return (run again now, they find nothing and read nothing)
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            discarded = [
                _rows_discarded(
                    conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", p).scalar()[0][
                        "Plan"
                    ]
                )
                for sql, p in lookups
            ]
            conn.rollback()
    finally:
        engine.dispose()
    assert discarded == [0] * len(lookups)


@pytest.fixture
def own_pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own (it migrates down and up)."""
    with own_pg_database() as url:
        yield url


def test_the_migration_goes_down_to_whole_indexes_and_up_again(own_pg_url):
    """Up: five partial indexes; down: whole again; up again, even after killed upgrades."""
    engine = make_engine(own_pg_url)
    config = alembic_config(engine)
    try:
        upgrade(engine)
        up = _indexes(engine)
        command.downgrade(config, "0007")
        down = _indexes(engine)
        # 0008 killed between dropping an index and building it again
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_deliveries_status_lease_until")
        upgrade(engine)
        again = _indexes(engine)
        # 0009 killed while building its index (left here with the wrong columns)
        command.downgrade(config, "0008")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE INDEX ix_deliveries_status_enqueued_at_not_before ON deliveries (status)"
            )
        upgrade(engine)
        once_more = _indexes(engine)
    finally:
        engine.dispose()
    assert {name: _holds(up[name]) for name in PARTIAL} == PARTIAL
    assert {name: _holds(down[BEFORE_0009.get(name, name)]) for name in PARTIAL} == dict.fromkeys(
        PARTIAL
    )
    assert again == up
    assert once_more == up


def test_an_upgrade_waits_while_another_process_upgrades(own_pg_url):
    """With the upgrade lock held elsewhere, an upgrade waits, then migrates once it is free."""
    # Given a database one revision behind, and another process holding the lock
    engine = make_engine(own_pg_url)
    config = alembic_config(engine)
    head = ScriptDirectory.from_config(config).get_current_head()
    command.downgrade(config, "0007")
    other = make_engine(own_pg_url, isolation_level="AUTOCOMMIT")
    try:
        with other.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            # When this process upgrades
            upgrading = threading.Thread(target=upgrade, args=(engine,), daemon=True)
            upgrading.start()
            upgrading.join(1.5)
            # Then it waits, changing nothing, until the other lets go
            assert upgrading.is_alive()
            assert current_revision(engine) == "0007"
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            upgrading.join(60)
        assert not upgrading.is_alive()
        assert current_revision(engine) == head
        assert {name: _holds(_indexes(engine)[name]) for name in PARTIAL} == PARTIAL
    finally:
        other.dispose()
        engine.dispose()
