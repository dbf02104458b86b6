"""The deliver job finds its rows by primary key, whatever PostgreSQL's statistics say.

A deliver job reads a page of rows (``id = ANY(:page) AND status IN (...)``)
and claims chunks of it the same way. When the table's statistics predate
the run (all its rows final, as in a live table of past sends, which
autoanalyze does not revisit during one broadcast), a bare status filter
looks rare, and PostgreSQL reads every pending row through the status index
to keep the page's: a cost per page that grows with the run.
``store.bulk.unindexed`` keeps the filter off the indexes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, literal, select, text

from scheduler import claim_due_runs
from store import Consent, Member, make_engine
from workers.delivery import deliver_batch
from workers.planning import plan_run

from .support import add_member, create, runtime_for, scripted_channels, sessions_for
from .support import write_campaign as campaign_file
from .test_pipeline import _rows

pytestmark = pytest.mark.postgres

MEMBERS = 5000


def test_the_page_and_its_claims_are_found_by_key_under_stale_statistics(
    pg_url: str, tmp_path: Path
) -> None:
    """Every statement of a deliver job that picks rows by id is planned on the primary key."""
    # Given a run of 5,000 pending email rows, and statistics taken when every row was sent
    sessions = sessions_for(pg_url)
    with sessions.begin() as session:
        template = add_member(session, consents={})
        columns = ("name", "locale", "time_zone", "tier", "points_balance", "attributes")
        session.execute(
            insert(Member),
            [
                {
                    **{c: getattr(template, c) for c in columns},
                    "external_id": f"K{n:06d}",
                    "email": f"k{n}@example.com",
                }
                for n in range(MEMBERS - 1)
            ],
        )
        session.execute(
            insert(Consent).from_select(
                ["member_id", "channel", "status", "source", "updated_at"],
                select(
                    Member.id,
                    literal("email"),
                    literal("opted_in"),
                    literal("test"),
                    literal(datetime(2026, 11, 2, tzinfo=UTC)),
                ),
            )
        )
    created = create(sessions, campaign_file(tmp_path, channels="[email]"))
    claim_due_runs(sessions)
    rt = runtime_for(pg_url, tmp_path, channels=scripted_channels())
    assert created.run_id is not None
    plan_run(rt, created.run_id)
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("UPDATE deliveries SET status = 'sent'"))
        conn.execute(text("ANALYZE deliveries"))
        conn.execute(text("UPDATE deliveries SET status = 'pending'"))

    # When a deliver job runs over the first 100 rows, its statements recorded
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "deliveries.id = ANY" in statement or "deliveries.id = given.id" in statement:
            seen.append((statement, parameters))

    event.listen(rt.engine, "before_cursor_execute", record)
    try:
        ids = [row.id for row in _rows(sessions, created.run_id)][:100]
        result = deliver_batch(rt, ids)
    finally:
        event.remove(rt.engine, "before_cursor_execute", record)
    assert result.counts["sent"] == 100

    # Then the page's read, every claim (10 chunks of 10) and every chunk's record of
    # what was sent look rows up by key (expiring leases is not among them: the status
    # and lease index finds just the expired ones, usually none)
    reads = [(s, p) for s, p in seen if s.startswith("SELECT")]
    claims = [(s, p) for s, p in seen if "RETURNING deliveries.id, deliveries.attempts" in s]
    records = [(s, p) for s, p in seen if "given" in s]
    assert (len(reads), len(claims), len(records)) == (1, 10, 10)
    with admin.connect() as conn:
        for statement, parameters in reads + claims + records:
            plan = "\n".join(
                row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            )
            assert "pk_deliveries" in plan, plan
            assert "ix_deliveries_status" not in plan, plan
    admin.dispose()
    rt.close()
