"""deliveries: the indexes of open work hold only open rows on PostgreSQL (partial indexes)

The sweeper, the lease expiry, ``deliveries retry`` and the provider webhooks
each look for a few rows of one kind in a ledger of millions: rows waiting to
be sent (``pending``, ``deferred``), rows being sent (``sending``), failed
rows, rows with a provider id, welcome-sequence steps. Their indexes held an
entry for every version of every row, so each of a message's three writes
(planned, claimed, recorded) inserted into all nine indexes of the table.
As partial indexes (``WHERE status IN (...)``, ``WHERE ... IS NOT NULL``)
they hold only the rows they are asked about: a message's three writes
insert 16 index entries instead of 27, and these indexes stay the size of
the open work instead of growing with the ledger. Measured with
``python -m bench deliver`` (10,000 email rows, four runs on each side,
alternated): the database's CPU per row fell from 97-113 to 74-93 us for the
plan's insert and from 122-137 to 91-122 us for the deliver job.

Every query that used these indexes names the status or the column that the
predicate names, so PostgreSQL proves the predicate from the query and keeps
using them (``tests/test_store_migrations.py`` checks each with sequential
scans disabled). SQLite keeps whole indexes: nothing changes there.

The indexes are rebuilt with ``CREATE INDEX CONCURRENTLY``, outside a
transaction (``store/migrations/env.py`` runs each migration in its own):
writes to ``deliveries`` go on while each builds, one scan of the table
each. Between dropping an index and finishing its successor, the queries it
served read the table instead. A killed upgrade runs again from the start:
each index is dropped if it exists (a half-built one is left invalid) and
built again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 23:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name: (columns, predicate); the same as store.models.Delivery's.
_INDEXES = {
    'ix_deliveries_status_enqueued_at': (
        ['status', 'enqueued_at'],
        "status IN ('pending', 'deferred')",
    ),
    'ix_deliveries_status_not_before': (
        ['status', 'not_before'],
        "status IN ('pending', 'deferred', 'failed')",
    ),
    'ix_deliveries_status_lease_until': (['status', 'lease_until'], "status = 'sending'"),
    'ix_deliveries_provider_message_id': (
        ['provider_message_id'],
        'provider_message_id IS NOT NULL',
    ),
    'ix_deliveries_enrollment_id': (['enrollment_id'], 'enrollment_id IS NOT NULL'),
}


def _rebuild(partial: bool) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    with op.get_context().autocommit_block():
        for name, (columns, where) in _INDEXES.items():
            op.drop_index(
                name, table_name='deliveries', postgresql_concurrently=True, if_exists=True
            )
            op.create_index(
                name,
                'deliveries',
                columns,
                postgresql_where=sa.text(where) if partial else None,
                postgresql_concurrently=True,
            )


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
