"""connector sync log: one row per action with its state and attempt count

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 15:25:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows logged before this revision keep no state (NULL): their per-attempt errors are history,
    # not open problems, so the dashboard does not count them.
    op.add_column('connector_sync_log', sa.Column('state', sa.String(length=20), nullable=True))
    op.add_column('connector_sync_log', sa.Column('attempts', sa.Integer(), nullable=False, server_default='1'))
    op.add_column('connector_sync_log', sa.Column('action_key', sa.String(length=300), nullable=True))
    op.create_index('ix_connector_sync_log_action', 'connector_sync_log', ['integration_id', 'action_key'],
                    unique=False)
    op.create_index('ix_connector_sync_log_state', 'connector_sync_log', ['integration_id', 'state'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_connector_sync_log_state', table_name='connector_sync_log')
    op.drop_index('ix_connector_sync_log_action', table_name='connector_sync_log')
    with op.batch_alter_table('connector_sync_log') as batch:
        batch.drop_column('action_key')
        batch.drop_column('attempts')
        batch.drop_column('state')
