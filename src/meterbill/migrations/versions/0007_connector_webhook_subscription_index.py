"""connector webhook subscription index

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 10:09:58.420845
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('connector_webhooks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subscription_id', sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f('ix_connector_webhooks_subscription_id'), ['subscription_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('connector_webhooks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_connector_webhooks_subscription_id'))
        batch_op.drop_column('subscription_id')

