"""daily usage rollup of measurement values; bill line documents as json

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 18:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'metering_usage_days',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('organization_id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(length=36), nullable=False),
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('field', sa.String(length=100), nullable=False),
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        sa.Column('total', sa.BigInteger().with_variant(sa.Numeric(38, 0), 'postgresql'), nullable=False),
        sa.Column('smallest', sa.BigInteger(), nullable=False),
        sa.Column('largest', sa.BigInteger(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_usage_days')),
    )
    op.create_index('ix_metering_usage_days_key', 'metering_usage_days',
                    ['organization_id', 'account_id', 'meter_id', 'field', 'day'], unique=False)
    # The days of the measurements already stored, as ingest keeps them from now on.
    day = ("date_trunc('day', ts, 'UTC')" if op.get_bind().dialect.name == 'postgresql'
           else "substr(ts, 1, 10) || ' 00:00:00.000000'")
    op.execute(
        "INSERT INTO metering_usage_days"
        " (organization_id, account_id, meter_id, field, day, total, smallest, largest, count)"
        f" SELECT organization_id, account_id, meter_id, field, {day}, SUM(micros), MIN(micros), MAX(micros), COUNT(*)"
        f" FROM metering_measurement_values GROUP BY organization_id, account_id, meter_id, field, {day}"
    )
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ANALYZE metering_usage_days")  # without statistics the first bill runs plan for an empty table
        # Read whole, never queried into: json is stored as written, jsonb parsed on every insert.
        op.execute('ALTER TABLE metering_bill_line_items ALTER COLUMN "references" TYPE json,'
                   ' ALTER COLUMN bands TYPE json')


def downgrade() -> None:
    op.drop_index('ix_metering_usage_days_key', table_name='metering_usage_days')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE metering_bill_line_items ALTER COLUMN "references" TYPE jsonb,'
                   ' ALTER COLUMN bands TYPE jsonb')
    op.drop_table('metering_usage_days')
