"""metering configuration, measurements and bills

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:15:20.420189
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('metering_bill_jobs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('bill_date', sa.Date(), nullable=False),
    sa.Column('account_ids', meterbill.core.db.JSONDocument(), nullable=True),
    sa.Column('bill_ids', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('pending', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('modified_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_bill_jobs'))
    )
    with op.batch_alter_table('metering_bill_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_metering_bill_jobs_organization_id'), ['organization_id'], unique=False)

    op.create_table('metering_bills',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('account_code', sa.String(length=200), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('period_start', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('period_end', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('bill_frequency', sa.String(length=20), nullable=False),
    sa.Column('bill_frequency_interval', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('locked', sa.Boolean(), nullable=False),
    sa.Column('total', meterbill.core.db.ExactDecimal(precision=38, scale=12), nullable=False),
    sa.Column('bill_job_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('approved_by', sa.String(length=100), nullable=True),
    sa.Column('approved_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('locked_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('calculated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('modified_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_bills')),
    sa.UniqueConstraint('organization_id', 'account_id', 'period_end', 'currency', name=op.f('uq_metering_bills_organization_id_account_id_period_end_currency'))
    )
    with op.batch_alter_table('metering_bills', schema=None) as batch_op:
        batch_op.create_index('ix_metering_bills_status', ['organization_id', 'status'], unique=False)

    op.create_table('metering_events',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('event_name', sa.String(length=100), nullable=False),
    sa.Column('event_time', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=True),
    sa.Column('resource_id', sa.String(length=36), nullable=True),
    sa.Column('payload', meterbill.core.db.JSONDocument(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_events'))
    )
    with op.batch_alter_table('metering_events', schema=None) as batch_op:
        batch_op.create_index('ix_metering_events_time', ['organization_id', 'event_time', 'id'], unique=False)

    op.create_table('metering_measurements',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('uid', sa.String(length=200), nullable=False),
    sa.Column('meter_id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('ts', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ets', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('dimensions', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('measures', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('received_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_measurements')),
    sa.UniqueConstraint('organization_id', 'uid', name=op.f('uq_metering_measurements_organization_id_uid'))
    )
    with op.batch_alter_table('metering_measurements', schema=None) as batch_op:
        batch_op.create_index('ix_metering_measurements_usage', ['organization_id', 'account_id', 'meter_id', 'ts'], unique=False)

    op.create_table('metering_bill_line_items',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('bill_id', sa.String(length=36), nullable=False),
    sa.Column('sequence_number', sa.Integer(), nullable=False),
    sa.Column('line_item_type', sa.String(length=40), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=False),
    sa.Column('quantity', meterbill.core.db.ExactDecimal(precision=38, scale=12), nullable=False),
    sa.Column('unit', sa.String(length=100), nullable=False),
    sa.Column('average_unit_price', meterbill.core.db.ExactDecimal(precision=38, scale=12), nullable=False),
    sa.Column('subtotal', meterbill.core.db.ExactDecimal(precision=38, scale=12), nullable=False),
    sa.Column('service_period_start', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('service_period_end', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('references', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('bands', meterbill.core.db.JSONDocument(), nullable=False),
    sa.ForeignKeyConstraint(['bill_id'], ['metering_bills.id'], name=op.f('fk_metering_bill_line_items_bill_id_metering_bills'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_bill_line_items'))
    )
    with op.batch_alter_table('metering_bill_line_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_metering_bill_line_items_bill_id'), ['bill_id'], unique=False)

    op.create_table('metering_config_entities',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('unique_key', sa.String(length=600), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('document', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('last_modified_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('modified_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['metering_organizations.id'], name=op.f('fk_metering_config_entities_organization_id_metering_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_config_entities')),
    sa.UniqueConstraint('organization_id', 'kind', 'unique_key', name=op.f('uq_metering_config_entities_organization_id_kind_unique_key'))
    )
    with op.batch_alter_table('metering_config_entities', schema=None) as batch_op:
        batch_op.create_index('ix_metering_config_entities_kind', ['organization_id', 'kind', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_metering_config_entities_organization_id'), ['organization_id'], unique=False)

    op.create_table('metering_measurement_values',
    sa.Column('measurement_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('field', sa.String(length=100), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('meter_id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('ts', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('micros', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['measurement_id'], ['metering_measurements.id'], name=op.f('fk_metering_measurement_values_measurement_id_metering_measurements'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('measurement_id', 'field', name=op.f('pk_metering_measurement_values'))
    )
    with op.batch_alter_table('metering_measurement_values', schema=None) as batch_op:
        batch_op.create_index('ix_metering_measurement_values_usage', ['organization_id', 'account_id', 'meter_id', 'field', 'ts'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('metering_measurement_values', schema=None) as batch_op:
        batch_op.drop_index('ix_metering_measurement_values_usage')

    op.drop_table('metering_measurement_values')
    with op.batch_alter_table('metering_config_entities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_metering_config_entities_organization_id'))
        batch_op.drop_index('ix_metering_config_entities_kind')

    op.drop_table('metering_config_entities')
    with op.batch_alter_table('metering_bill_line_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_metering_bill_line_items_bill_id'))

    op.drop_table('metering_bill_line_items')
    with op.batch_alter_table('metering_measurements', schema=None) as batch_op:
        batch_op.drop_index('ix_metering_measurements_usage')

    op.drop_table('metering_measurements')
    with op.batch_alter_table('metering_events', schema=None) as batch_op:
        batch_op.drop_index('ix_metering_events_time')

    op.drop_table('metering_events')
    with op.batch_alter_table('metering_bills', schema=None) as batch_op:
        batch_op.drop_index('ix_metering_bills_status')

    op.drop_table('metering_bills')
    with op.batch_alter_table('metering_bill_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_metering_bill_jobs_organization_id'))

    op.drop_table('metering_bill_jobs')
