"""campaign runs: ``error``, why a run's planning failed

A run whose plan cannot proceed until an operator fixes something (a rule
the program's policy file no longer allows) ends ``failed`` with the reason
in ``error``, instead of being retried and re-planned forever.
``loyalcast campaigns replan NAME`` schedules it again. A nullable column:
adding it rewrites nothing on either database.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('campaign_runs', sa.Column('error', sa.Text(), nullable=True))


def downgrade() -> None:
    # A failed run has no meaning before this revision: schedule it again.
    op.execute("UPDATE campaign_runs SET status = 'scheduled' WHERE status = 'failed'")
    with op.batch_alter_table('campaign_runs') as batch:
        batch.drop_column('error')
