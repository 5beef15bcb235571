"""subscription due-action index in the engine's order

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 12:40:00.000000
"""

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('billing_subscriptions', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_subscriptions_next_action_at')
        batch_op.create_index('ix_billing_subscriptions_due', ['site_id', 'next_action_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('billing_subscriptions', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_subscriptions_due')
        batch_op.create_index('ix_billing_subscriptions_next_action_at', ['next_action_at'], unique=False)
