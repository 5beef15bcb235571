"""invoice and credit note operations: adjustments, refunds, deletion

Revision ID: 0019_invoiceops
Revises: 0018
Create Date: 2026-12-07 00:10:00.000000

`amount_adjusted` (write-offs) lowers what an invoice asks for, beside payments and credits;
`amount_refunded` is what a credit note paid back; `deleted` hides a deleted document as
Chargebee does (retrieve answers 404, lists show it only with `include_deleted`).
"""

import sqlalchemy as sa
from alembic import op

revision = '0019_invoiceops'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('billing_invoices') as batch:
        batch.add_column(sa.Column('amount_adjusted', sa.BigInteger(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('deleted', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('billing_credit_notes') as batch:
        batch.add_column(sa.Column('amount_refunded', sa.BigInteger(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('deleted', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('billing_credit_notes') as batch:
        batch.drop_column('deleted')
        batch.drop_column('amount_refunded')
    with op.batch_alter_table('billing_invoices') as batch:
        batch.drop_column('deleted')
        batch.drop_column('amount_adjusted')
