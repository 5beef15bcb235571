"""measurement file uploads

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:26:08.697891
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('metering_file_upload_jobs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('organization_id', sa.String(length=36), nullable=False),
    sa.Column('file_name', sa.String(length=500), nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=False),
    sa.Column('content_length', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('total_rows', sa.Integer(), nullable=False),
    sa.Column('processed_rows', sa.Integer(), nullable=False),
    sa.Column('failed_rows', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('uploaded_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_file_upload_jobs'))
    )
    with op.batch_alter_table('metering_file_upload_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_metering_file_upload_jobs_organization_id'), ['organization_id'], unique=False)

    op.create_table('metering_file_upload_chunks',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['metering_file_upload_jobs.id'], name=op.f('fk_metering_file_upload_chunks_job_id_metering_file_upload_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'sequence', name=op.f('pk_metering_file_upload_chunks'))
    )
    op.create_table('metering_file_upload_errors',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('row', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['metering_file_upload_jobs.id'], name=op.f('fk_metering_file_upload_errors_job_id_metering_file_upload_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'row', name=op.f('pk_metering_file_upload_errors'))
    )


def downgrade() -> None:
    op.drop_table('metering_file_upload_errors')
    op.drop_table('metering_file_upload_chunks')
    with op.batch_alter_table('metering_file_upload_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_metering_file_upload_jobs_organization_id'))

    op.drop_table('metering_file_upload_jobs')
