"""point lots: the (expires_at, member_id) index covers points and redeemed on PostgreSQL

The expiry-deadline scan (``segments.expiry``) and the whole-audience form of
``points_expiring`` read the lots of a window of ``expires_at`` and need only
``member_id``, ``points`` and ``redeemed``. With those in the index
(``INCLUDE``), PostgreSQL answers from the index alone (an index-only scan, a
few MB for 30 days of lots) instead of visiting nearly every heap page of
``point_lots``: lots are written in member order and their expiry dates are
spread over a year, so one month's lots lie on almost every page.

Write cost: each index entry is 8 bytes wider (points, redeemed). Lots are
only inserted today; an UPDATE of ``redeemed`` would no longer be a HOT update
(a new entry in each index of the table) once the column is in an index.
SQLite has no INCLUDE: nothing changes there.

Rebuilding the index takes a lock that blocks writes to ``point_lots`` while
it builds (a few seconds per million lots).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = 'ix_point_lots_expires_at_member_id'


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_index(_NAME, table_name='point_lots')
    op.create_index(
        _NAME,
        'point_lots',
        ['expires_at', 'member_id'],
        postgresql_include=['points', 'redeemed'],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_index(_NAME, table_name='point_lots')
    op.create_index(_NAME, 'point_lots', ['expires_at', 'member_id'])
