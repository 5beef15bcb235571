"""billing invoices: tax withheld by the customer (record_tax_withheld), settling the invoice like a payment

Revision ID: 0020_depthimports
Revises: 0020_depthschedules
Create Date: 2026-12-07 03:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0020_depthimports'
down_revision = '0020_depthschedules'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('billing_invoices') as batch:
        batch.add_column(sa.Column('tax_withheld', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('billing_invoices') as batch:
        batch.drop_column('tax_withheld')
