"""metering: batches acknowledged on PostgreSQL once landed whole, expanded into measurements after

Revision ID: 0022_landed_batches
Revises: 0021_comments
Create Date: 2026-12-07 13:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0022_landed_batches'
down_revision = '0021_comments'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'metering_landed_batches',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('organization_id', sa.String(length=36), nullable=False),
        sa.Column('document', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_metering_landed_batches_org', 'metering_landed_batches', ['organization_id', 'id'])
    if op.get_bind().dialect.name == 'postgresql':
        # Stored as it comes: compressing 100 kB per batch would cost the request more than the row.
        op.execute("ALTER TABLE metering_landed_batches ALTER COLUMN document SET STORAGE EXTERNAL")


def downgrade() -> None:
    # Batches not yet expanded are expanded first (as `store.sql.settle` does), so none is lost.
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("""
            INSERT INTO metering_measurements (series_id, ts, ets, uid_key, uid, measures, dimensions)
            SELECT (e ->> 0)::integer, (e ->> 1)::timestamptz, (e ->> 2)::timestamptz,
                   encode(substring(sha256(convert_to(b.organization_id || (e ->> 3), 'UTF8')) FROM 1 FOR 16),
                          'hex')::uuid,
                   e ->> 3, NULLIF(e -> 4, 'null')::json, NULLIF(e -> 5, 'null')::json
            FROM metering_landed_batches b, jsonb_array_elements(b.document::jsonb) WITH ORDINALITY AS r(e, n)
            ORDER BY b.id, r.n
            ON CONFLICT (uid_key) DO NOTHING
        """)
    op.drop_index('ix_metering_landed_batches_org', table_name='metering_landed_batches')
    op.drop_table('metering_landed_batches')
