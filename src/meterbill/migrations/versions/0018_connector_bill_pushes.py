"""connector bill pushes: what each approved bill version became in Chargebee

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 22:20:00.000000

Bills pushed before this revision have no rows: their later corrections are not computed.
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'connector_bill_pushes',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('integration_id', sa.String(length=36), nullable=False),
        sa.Column('bill_id', sa.String(length=100), nullable=False),
        sa.Column('bill_version', sa.Integer(), nullable=False),
        sa.Column('document', sa.String(length=20), nullable=False),
        sa.Column('document_id', sa.String(length=100), nullable=False),
        sa.Column('invoice_id', sa.String(length=100), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_connector_bill_pushes')),
    )
    op.create_index('ix_connector_bill_pushes_bill', 'connector_bill_pushes',
                    ['integration_id', 'bill_id', 'bill_version', 'document_id'], unique=True)


def downgrade() -> None:
    op.drop_index('ix_connector_bill_pushes_bill', table_name='connector_bill_pushes')
    op.drop_table('connector_bill_pushes')
