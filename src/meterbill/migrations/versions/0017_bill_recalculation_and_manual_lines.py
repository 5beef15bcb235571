"""bill recalculation and manual lines: bill job type, bill versions, credit/debit line item fields

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 21:50:00.000000

Existing bill jobs were all CREATE jobs; existing line items are all rated lines (no audit fields).
"""

from decimal import Decimal

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

LINE_AUDIT_COLUMNS = ('version', 'created_by', 'created_at', 'modified_by', 'modified_at')


def upgrade() -> None:
    op.add_column('metering_bill_jobs',
                  sa.Column('job_type', sa.String(length=20), nullable=False, server_default='CREATE'))
    op.add_column('metering_bill_line_items', sa.Column('version', sa.Integer(), nullable=True))
    op.add_column('metering_bill_line_items', sa.Column('created_by', sa.String(length=100), nullable=True))
    op.add_column('metering_bill_line_items',
                  sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True))
    op.add_column('metering_bill_line_items', sa.Column('modified_by', sa.String(length=100), nullable=True))
    op.add_column('metering_bill_line_items',
                  sa.Column('modified_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        'metering_bill_versions',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('organization_id', sa.String(length=36), nullable=False),
        sa.Column('bill_id', sa.String(length=36), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('total', meterbill.core.db.ExactDecimal(precision=38, scale=12), nullable=False),
        sa.Column('calculated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('approved_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('superseded_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('lines', meterbill.core.db.JSONText(), nullable=False),
        sa.ForeignKeyConstraint(['bill_id'], ['metering_bills.id'],
                                name=op.f('fk_metering_bill_versions_bill_id_metering_bills'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_bill_versions')),
    )
    op.create_index('ix_metering_bill_versions_bill', 'metering_bill_versions',
                    ['organization_id', 'bill_id', 'version'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_metering_bill_versions_bill', table_name='metering_bill_versions')
    op.drop_table('metering_bill_versions')
    _drop_manual_lines()
    with op.batch_alter_table('metering_bill_line_items') as batch:
        for column in LINE_AUDIT_COLUMNS:
            batch.drop_column(column)
    with op.batch_alter_table('metering_bill_jobs') as batch:
        batch.drop_column('job_type')


def _drop_manual_lines() -> None:
    """Credit and debit line items have no place in the older schema: they go, and their bills'
    totals are summed again from the lines left (in Python: SQLite keeps exact decimals as text)."""
    bind = op.get_bind()
    manual = "line_item_type IN ('CREDIT_MEMO', 'DEBIT_MEMO')"
    bill_ids = list(bind.execute(sa.text(
        f"SELECT DISTINCT bill_id FROM metering_bill_line_items WHERE {manual}")).scalars())
    bind.execute(sa.text(f"DELETE FROM metering_bill_line_items WHERE {manual}"))
    for bill_id in bill_ids:
        subtotals = bind.execute(sa.text("SELECT subtotal FROM metering_bill_line_items WHERE bill_id = :bill"),
                                 {"bill": bill_id}).scalars()
        total = sum((Decimal(str(value)) for value in subtotals), Decimal(0))
        bind.execute(sa.text("UPDATE metering_bills SET total = :total WHERE id = :bill"),
                     {"total": str(total), "bill": bill_id})
