"""billing payment schedule schemes, the payment schedules they split invoices into, and email logs

Revision ID: 0020_depthschedules
Revises: 0019_subscriptions
Create Date: 2026-12-07 03:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0020_depthschedules'
down_revision = '0019_subscriptions'
branch_labels = None
depends_on = None


def _record_columns() -> list[sa.Column]:
    return [
        sa.Column('site_id', sa.String(length=64), nullable=False),
        sa.Column('id', sa.String(length=100), nullable=False),
        sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
        sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('resource_version', sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        'billing_payment_schedule_schemes',
        *_record_columns(),
        sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_payment_schedule_schemes')),
    )
    op.create_table(
        'billing_payment_schedules',
        sa.Column('invoice_id', sa.String(length=100), nullable=False),
        sa.Column('scheme_id', sa.String(length=100), nullable=False),
        *_record_columns(),
        sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_payment_schedules')),
    )
    op.create_index('ix_billing_payment_schedules_invoice', 'billing_payment_schedules', ['site_id', 'invoice_id'],
                    unique=True)
    op.create_table(
        'billing_email_logs',
        sa.Column('customer_id', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('sent_on', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
        *_record_columns(),
        sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_email_logs')),
    )
    op.create_index('ix_billing_email_logs_customer', 'billing_email_logs', ['site_id', 'customer_id', 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_billing_email_logs_customer', table_name='billing_email_logs')
    op.drop_table('billing_email_logs')
    op.drop_index('ix_billing_payment_schedules_invoice', table_name='billing_payment_schedules')
    op.drop_table('billing_payment_schedules')
    op.drop_table('billing_payment_schedule_schemes')
