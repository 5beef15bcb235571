"""billing comments: internal notes on customers, subscriptions, invoices, credit notes and the catalog

Revision ID: 0021_comments
Revises: 0020_depthimports
Create Date: 2026-12-07 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0021_comments'
down_revision = '0020_depthimports'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'billing_comments',
        sa.Column('entity_type', sa.String(length=40), nullable=False),
        sa.Column('entity_id', sa.String(length=100), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('site_id', sa.String(length=64), nullable=False),
        sa.Column('id', sa.String(length=100), nullable=False),
        sa.Column('data', meterbill.core.db.JSONDocument(), nullable=False),
        sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('resource_version', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('site_id', 'id', name=op.f('pk_billing_comments')),
    )
    op.create_index('ix_billing_comments_entity', 'billing_comments',
                    ['site_id', 'entity_type', 'entity_id', 'sequence'], unique=False)
    op.create_index('ix_billing_comments_sequence', 'billing_comments', ['site_id', 'sequence'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_billing_comments_sequence', table_name='billing_comments')
    op.drop_index('ix_billing_comments_entity', table_name='billing_comments')
    op.drop_table('billing_comments')
