"""connector webhooks, sync log, cursors

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:47:55.104410
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('connector_cursors',
    sa.Column('integration_id', sa.String(length=36), nullable=False),
    sa.Column('m3ter_event_token', sa.String(length=100), nullable=True),
    sa.Column('seen_event_ids', meterbill.core.db.JSONDocument(), nullable=False),
    sa.PrimaryKeyConstraint('integration_id', name=op.f('pk_connector_cursors'))
    )
    op.create_table('connector_sync_log',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('integration_id', sa.String(length=36), nullable=False),
    sa.Column('at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('chargebee_id', sa.String(length=200), nullable=True),
    sa.Column('m3ter_id', sa.String(length=200), nullable=True),
    sa.Column('retry_topic', sa.String(length=100), nullable=True),
    sa.Column('retry_payload', meterbill.core.db.JSONDocument(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_connector_sync_log'))
    )
    with op.batch_alter_table('connector_sync_log', schema=None) as batch_op:
        batch_op.create_index('ix_connector_sync_log_time', ['integration_id', 'at'], unique=False)

    op.create_table('connector_webhooks',
    sa.Column('integration_id', sa.String(length=36), nullable=False),
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('event_type', sa.String(length=60), nullable=False),
    sa.Column('occurred_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('payload', meterbill.core.db.JSONDocument(), nullable=False),
    sa.Column('received_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('integration_id', 'event_id', name=op.f('pk_connector_webhooks'))
    )


def downgrade() -> None:
    op.drop_table('connector_webhooks')
    with op.batch_alter_table('connector_sync_log', schema=None) as batch_op:
        batch_op.drop_index('ix_connector_sync_log_time')

    op.drop_table('connector_sync_log')
    op.drop_table('connector_cursors')
