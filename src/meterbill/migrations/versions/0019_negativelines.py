"""connector bill pushes: the line type a credit for negative bill lines covers, and lookups by invoice

Revision ID: 0019_negativelines
Revises: 0019_promocredits
Create Date: 2026-12-07 00:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0019_negativelines'
down_revision = '0019_promocredits'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('connector_bill_pushes') as batch:
        batch.add_column(sa.Column('line_type', sa.String(length=40), nullable=True))
    op.create_index('ix_connector_bill_pushes_invoice', 'connector_bill_pushes', ['integration_id', 'invoice_id'])


def downgrade() -> None:
    op.drop_index('ix_connector_bill_pushes_invoice', table_name='connector_bill_pushes')
    with op.batch_alter_table('connector_bill_pushes') as batch:
        batch.drop_column('line_type')
