"""tenancy and outbox

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 09:05:51.678507
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('billing_sites',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('test_mode', sa.Boolean(), nullable=False),
    sa.Column('time_machine_time', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_sites'))
    )
    op.create_table('connector_integrations',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('chargebee_site', sa.String(length=64), nullable=False),
    sa.Column('chargebee_base_url', sa.String(length=500), nullable=False),
    sa.Column('chargebee_api_key_encrypted', sa.String(length=500), nullable=False),
    sa.Column('m3ter_org_id', sa.String(length=64), nullable=False),
    sa.Column('m3ter_base_url', sa.String(length=500), nullable=False),
    sa.Column('m3ter_api_key', sa.String(length=200), nullable=False),
    sa.Column('m3ter_api_secret_encrypted', sa.String(length=500), nullable=False),
    sa.Column('webhook_username', sa.String(length=100), nullable=False),
    sa.Column('webhook_password_hash', sa.String(length=64), nullable=False),
    sa.Column('close_invoice_after_push', sa.Boolean(), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_connector_integrations'))
    )
    op.create_table('metering_organizations',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_organizations'))
    )
    op.create_table('outbox_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('topic', sa.String(length=100), nullable=False),
    sa.Column('payload', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('available_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('leased_until', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('processed_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages'))
    )
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_messages_due', ['status', 'available_at'], unique=False)

    op.create_table('billing_api_keys',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('lookup_prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['site_id'], ['billing_sites.id'], name=op.f('fk_billing_api_keys_site_id_billing_sites'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_api_keys'))
    )
    with op.batch_alter_table('billing_api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_api_keys_lookup_prefix'), ['lookup_prefix'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_api_keys_site_id'), ['site_id'], unique=False)

    op.create_table('metering_api_keys',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['organization_id'], ['metering_organizations.id'], name=op.f('fk_metering_api_keys_organization_id_metering_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_api_keys'))
    )
    with op.batch_alter_table('metering_api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_metering_api_keys_organization_id'), ['organization_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('metering_api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_metering_api_keys_organization_id'))

    op.drop_table('metering_api_keys')
    with op.batch_alter_table('billing_api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_api_keys_site_id'))
        batch_op.drop_index(batch_op.f('ix_billing_api_keys_lookup_prefix'))

    op.drop_table('billing_api_keys')
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_messages_due')

    op.drop_table('outbox_messages')
    op.drop_table('metering_organizations')
    op.drop_table('connector_integrations')
    op.drop_table('billing_sites')
