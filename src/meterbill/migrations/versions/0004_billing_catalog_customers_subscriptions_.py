"""billing catalog, customers, subscriptions, invoices, events

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:35:40.267323
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('billing_credit_notes',
    sa.Column('customer_id', sa.String(length=100), nullable=False),
    sa.Column('subscription_id', sa.String(length=100), nullable=True),
    sa.Column('reference_invoice_id', sa.String(length=100), nullable=True),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('currency_code', sa.String(length=3), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('amount_allocated', sa.BigInteger(), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_credit_notes'))
    )
    with op.batch_alter_table('billing_credit_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_credit_notes_customer_id'), ['customer_id'], unique=False)

    op.create_table('billing_customers',
    sa.Column('email', sa.String(length=200), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_customers'))
    )
    op.create_table('billing_events',
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('event_type', sa.String(length=60), nullable=False),
    sa.Column('occurred_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('content', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('webhook_status', sa.String(length=20), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_events'))
    )
    with op.batch_alter_table('billing_events', schema=None) as batch_op:
        batch_op.create_index('ix_billing_events_time', ['site_id', 'occurred_at', 'sequence'], unique=False)

    op.create_table('billing_idempotent_responses',
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('body', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'key', name=op.f('pk_billing_idempotent_responses'))
    )
    op.create_table('billing_invoices',
    sa.Column('customer_id', sa.String(length=100), nullable=False),
    sa.Column('subscription_id', sa.String(length=100), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('currency_code', sa.String(length=3), nullable=False),
    sa.Column('date', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('period_start', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('period_end', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('amount_paid', sa.BigInteger(), nullable=False),
    sa.Column('credits_applied', sa.BigInteger(), nullable=False),
    sa.Column('line_items', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_invoices'))
    )
    with op.batch_alter_table('billing_invoices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_invoices_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_invoices_subscription_id'), ['subscription_id'], unique=False)

    op.create_table('billing_item_families',
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_item_families'))
    )
    op.create_table('billing_item_prices',
    sa.Column('item_id', sa.String(length=100), nullable=False),
    sa.Column('item_type', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('currency_code', sa.String(length=3), nullable=False),
    sa.Column('pricing_model', sa.String(length=20), nullable=False),
    sa.Column('price', meterbill.core.db.ExactDecimal(precision=38, scale=12), nullable=True),
    sa.Column('period', sa.Integer(), nullable=True),
    sa.Column('period_unit', sa.String(length=10), nullable=True),
    sa.Column('tiers', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_item_prices'))
    )
    op.create_table('billing_items',
    sa.Column('type', sa.String(length=10), nullable=False),
    sa.Column('item_family_id', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('metered', sa.Boolean(), nullable=False),
    sa.Column('usage_calculation', sa.String(length=20), nullable=True),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_items'))
    )
    op.create_table('billing_subscriptions',
    sa.Column('customer_id', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('currency_code', sa.String(length=3), nullable=False),
    sa.Column('billing_period', sa.Integer(), nullable=False),
    sa.Column('billing_period_unit', sa.String(length=10), nullable=False),
    sa.Column('billing_anchor', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('current_term_start', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('current_term_end', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('term_index', sa.Integer(), nullable=False),
    sa.Column('started_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('activated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_action_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('items', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_subscriptions'))
    )
    with op.batch_alter_table('billing_subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_subscriptions_next_action_at'), ['next_action_at'], unique=False)

    op.create_table('billing_usages',
    sa.Column('subscription_id', sa.String(length=100), nullable=False),
    sa.Column('item_price_id', sa.String(length=100), nullable=False),
    sa.Column('quantity', meterbill.core.db.ExactDecimal(precision=38, scale=12), nullable=False),
    sa.Column('usage_date', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('invoice_id', sa.String(length=100), nullable=True),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_usages'))
    )
    with op.batch_alter_table('billing_usages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_usages_subscription_id'), ['subscription_id'], unique=False)

    op.create_table('billing_webhook_endpoints',
    sa.Column('url', sa.String(length=1000), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('basic_auth_username', sa.String(length=200), nullable=True),
    sa.Column('basic_auth_password_encrypted', sa.String(length=1000), nullable=True),
    sa.Column('enabled_events', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resource_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_webhook_endpoints'))
    )
    with op.batch_alter_table('billing_sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('time_machine_genesis', meterbill.core.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('time_travel_status', sa.String(length=20), nullable=False, server_default='succeeded'))
        batch_op.add_column(sa.Column('time_travel_error', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('sequence', sa.BigInteger(), nullable=False, server_default='0'))



def downgrade() -> None:
    with op.batch_alter_table('billing_sites', schema=None) as batch_op:
        batch_op.drop_column('sequence')
        batch_op.drop_column('time_travel_error')
        batch_op.drop_column('time_travel_status')
        batch_op.drop_column('time_machine_genesis')

    op.drop_table('billing_webhook_endpoints')
    with op.batch_alter_table('billing_usages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_usages_subscription_id'))

    op.drop_table('billing_usages')
    with op.batch_alter_table('billing_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_subscriptions_next_action_at'))

    op.drop_table('billing_subscriptions')
    op.drop_table('billing_items')
    op.drop_table('billing_item_prices')
    op.drop_table('billing_item_families')
    with op.batch_alter_table('billing_invoices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_invoices_subscription_id'))
        batch_op.drop_index(batch_op.f('ix_billing_invoices_customer_id'))

    op.drop_table('billing_invoices')
    op.drop_table('billing_idempotent_responses')
    with op.batch_alter_table('billing_events', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_events_time')

    op.drop_table('billing_events')
    op.drop_table('billing_customers')
    with op.batch_alter_table('billing_credit_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_credit_notes_customer_id'))

    op.drop_table('billing_credit_notes')
