"""household claims

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 03:23:52.008701
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.models


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('household_claims',
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('household_key', sa.String(length=64), nullable=False),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('claimed_at', store.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_household_claims_delivery_id_deliveries'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['campaign_runs.id'], name=op.f('fk_household_claims_run_id_campaign_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'household_key', name=op.f('pk_household_claims'))
    )



def downgrade() -> None:

    op.drop_table('household_claims')

