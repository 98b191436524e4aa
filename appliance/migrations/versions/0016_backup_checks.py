"""Backups are checked and their checks recorded (`backup_checks`): a scheduled backup prunes
only what the retention policy allows while keeping the newest verified ones, and the console
shows a failed or missed daily backup.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'backup_checks',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('file', sa.String(length=128), nullable=False),
        sa.Column('folder', sa.Text(), nullable=False),
        sa.Column('taken_at', sa.Integer(), nullable=False),
        sa.Column('bytes', sa.Integer(), nullable=False),
        sa.Column('ok', sa.Boolean(), nullable=False),
        sa.Column('problem', sa.Text(), nullable=True),
        sa.Column('checked_at', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.LargeBinary(length=32), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_backup_checks_file', 'backup_checks', ['file'])


def downgrade() -> None:
    op.drop_index('ix_backup_checks_file', table_name='backup_checks')
    op.drop_table('backup_checks')
