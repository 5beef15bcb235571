"""billing promotional credits: the customer's ledger of promotional credit entries

Revision ID: 0019_promocredits
Revises: 0019_invoiceops
Create Date: 2026-12-07 00:25:00.000000
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0019_promocredits'
down_revision = '0019_invoiceops'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'billing_promotional_credits',
        sa.Column('customer_id', sa.String(length=100), nullable=False),
        sa.Column('type', sa.String(length=10), nullable=False),
        sa.Column('currency_code', sa.String(length=3), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('closing_balance', sa.BigInteger(), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('site_id', sa.String(length=64), nullable=False),
        sa.Column('id', sa.String(length=100), nullable=False),
        sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
        sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('resource_version', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_promotional_credits')),
    )
    op.create_index('ix_billing_promotional_credits_customer', 'billing_promotional_credits',
                    ['site_id', 'customer_id', 'currency_code', 'sequence'], unique=False)
    op.create_index('ix_billing_promotional_credits_sequence', 'billing_promotional_credits',
                    ['site_id', 'sequence'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_billing_promotional_credits_sequence', table_name='billing_promotional_credits')
    op.drop_index('ix_billing_promotional_credits_customer', table_name='billing_promotional_credits')
    op.drop_table('billing_promotional_credits')
