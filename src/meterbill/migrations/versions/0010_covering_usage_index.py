"""measurement values usage index covers micros

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 12:55:00.000000
"""

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

COLUMNS = ['organization_id', 'account_id', 'meter_id', 'field', 'ts']


def upgrade() -> None:
    with op.batch_alter_table('metering_measurement_values', schema=None) as batch_op:
        batch_op.drop_index('ix_metering_measurement_values_usage')
        batch_op.create_index('ix_metering_measurement_values_usage', [*COLUMNS, 'micros'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('metering_measurement_values', schema=None) as batch_op:
        batch_op.drop_index('ix_metering_measurement_values_usage')
        batch_op.create_index('ix_metering_measurement_values_usage', COLUMNS, unique=False)
