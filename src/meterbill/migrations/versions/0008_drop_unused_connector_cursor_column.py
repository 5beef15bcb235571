"""drop unused connector cursor column

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 10:36:25.245509
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('connector_cursors', schema=None) as batch_op:
        batch_op.drop_column('seen_event_ids')



def downgrade() -> None:
    with op.batch_alter_table('connector_cursors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seen_event_ids', meterbill.core.db.JSONDocument(), nullable=False, server_default='[]'))

