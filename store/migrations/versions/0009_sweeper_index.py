"""deliveries: the sweeper's index holds ``not_before`` too

The sweeper looks for open rows that are due (no ``not_before``, or past it)
and that no live job holds (never enqueued, or longer ago than a lease). As
one query, that OR of ORs matched no index range: PostgreSQL read every open
row, or the whole ledger in id order, on every sweep, which during a large
broadcast is every row in flight. ``workers.sweeping`` now asks for three
disjoint kinds of due row per status, and this index, ``(status,
enqueued_at, not_before)`` in place of ``(status, enqueued_at)``, answers
each with a range (``enqueued_at IS NULL AND not_before <= now`` included),
so a sweep reads the rows it finds and no others. The index keeps the
predicate of 0008 on PostgreSQL (waiting rows only); every query the old
index served is served by its first two columns.

On PostgreSQL the new index is built ``CONCURRENTLY`` before the old one is
dropped (writes go on, and the sweeper always has an index); a killed
upgrade runs again from the start (a half-built index is dropped and built
again). On SQLite both happen in the upgrade's transaction.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ('ix_deliveries_status_enqueued_at', ['status', 'enqueued_at'])
_NEW = ('ix_deliveries_status_enqueued_at_not_before', ['status', 'enqueued_at', 'not_before'])
_WAITING = "status IN ('pending', 'deferred')"  # store.models._WAITING


def _replace(old: tuple[str, list[str]], new: tuple[str, list[str]]) -> None:
    """Build ``new``, then drop ``old``."""
    (old_name, _), (new_name, columns) = old, new
    if op.get_bind().dialect.name != 'postgresql':
        op.create_index(new_name, 'deliveries', columns)
        op.drop_index(old_name, table_name='deliveries')
        return
    with op.get_context().autocommit_block():
        op.drop_index(
            new_name, table_name='deliveries', postgresql_concurrently=True, if_exists=True
        )
        op.create_index(
            new_name,
            'deliveries',
            columns,
            postgresql_where=sa.text(_WAITING),
            postgresql_concurrently=True,
        )
        op.drop_index(
            old_name, table_name='deliveries', postgresql_concurrently=True, if_exists=True
        )


def upgrade() -> None:
    _replace(_OLD, _NEW)


def downgrade() -> None:
    _replace(_NEW, _OLD)
