"""billing webhook deliveries: one row per event and endpoint, with its own status

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-06 16:10:00.000000
"""

import json

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0015'
down_revision = '0013'
branch_labels = None
depends_on = None

TOPIC = 'billing.webhook_delivery'
# What an outbox message's state says about its delivery; a pending one keeps the event's status.
OUTCOME = {'done': 'succeeded', 'dead': 'failed'}


def upgrade() -> None:
    op.create_table(
        'billing_webhook_deliveries',
        sa.Column('site_id', sa.String(length=64), nullable=False),
        sa.Column('event_id', sa.String(length=100), nullable=False),
        sa.Column('endpoint_id', sa.String(length=100), nullable=False),
        sa.Column('event_sequence', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('waiting', sa.Boolean(), nullable=False),
        sa.Column('token', sa.String(length=36), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('scheduled_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_attempt_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('failure_reason', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['site_id', 'event_id'], ['billing_events.site_id', 'billing_events.id'],
                                name=op.f('fk_billing_webhook_deliveries_site_id_billing_events'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['site_id', 'endpoint_id'],
                                ['billing_webhook_endpoints.site_id', 'billing_webhook_endpoints.id'],
                                name=op.f('fk_billing_webhook_deliveries_site_id_billing_webhook_endpoints'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('site_id', 'event_id', 'endpoint_id', name=op.f('pk_billing_webhook_deliveries')),
    )
    op.create_index('ix_billing_webhook_deliveries_endpoint', 'billing_webhook_deliveries',
                    ['site_id', 'endpoint_id', 'event_sequence'], unique=False)
    op.create_index('ix_billing_webhook_deliveries_endpoint_status', 'billing_webhook_deliveries',
                    ['site_id', 'endpoint_id', 'status', 'event_sequence'], unique=False)
    op.create_index('ix_billing_webhook_deliveries_status', 'billing_webhook_deliveries',
                    ['site_id', 'status', 'event_sequence'], unique=False)
    _backfill()


def _backfill() -> None:
    """Deliveries already queued or done get their row, so they can be seen and resent. Rows for
    still-pending messages carry the empty token, which those messages (queued without one) match."""
    bind = op.get_bind()
    events = {(site, event): (sequence, status) for site, event, sequence, status in bind.execute(
        sa.text('SELECT site_id, id, sequence, webhook_status FROM billing_events'))}
    endpoints = {(site, endpoint) for site, endpoint in bind.execute(
        sa.text('SELECT site_id, id FROM billing_webhook_endpoints'))}
    rows: dict[tuple[str, str, str], dict[str, object]] = {}
    messages = bind.execute(sa.text(
        'SELECT payload, status, attempts, created_at, processed_at, last_error FROM outbox_messages'
        ' WHERE topic = :topic ORDER BY id'), {'topic': TOPIC})
    for payload, status, attempts, created_at, processed_at, last_error in messages:
        payload = payload if isinstance(payload, dict) else json.loads(payload)
        site, event, endpoint = payload['site_id'], payload['event_id'], payload['endpoint_id']
        if (site, event) not in events or (site, endpoint) not in endpoints:
            continue
        sequence, event_status = events[(site, event)]
        rows[(site, event, endpoint)] = {
            'site_id': site, 'event_id': event, 'endpoint_id': endpoint, 'event_sequence': sequence,
            'status': OUTCOME.get(status, event_status), 'waiting': False, 'token': '', 'attempts': attempts,
            'scheduled_at': created_at, 'last_attempt_at': processed_at,
            'failure_reason': last_error if status == 'dead' else None,
        }
    if rows:
        op.bulk_insert(sa.table(
            'billing_webhook_deliveries', *(sa.column(name) for name in (
                'site_id', 'event_id', 'endpoint_id', 'event_sequence', 'status', 'waiting', 'token', 'attempts',
                'scheduled_at', 'last_attempt_at', 'failure_reason'))), list(rows.values()))


def downgrade() -> None:
    op.drop_index('ix_billing_webhook_deliveries_status', table_name='billing_webhook_deliveries')
    op.drop_index('ix_billing_webhook_deliveries_endpoint_status', table_name='billing_webhook_deliveries')
    op.drop_index('ix_billing_webhook_deliveries_endpoint', table_name='billing_webhook_deliveries')
    op.drop_table('billing_webhook_deliveries')
