"""Audit trails that travel: other nodes' audit entries as they arrive by bundle or LAN
(`workspace_audit`), and how far each peer holds each origin's trail (`peer_audit`).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'workspace_audit',
        sa.Column('origin', sa.LargeBinary(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('at', sa.Integer(), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=48), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('prev_hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('signature', sa.LargeBinary(length=64), nullable=True),
        sa.Column('received_at', sa.Integer(), nullable=False),
        sa.Column('received_from', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('origin', 'seq'),
    )
    op.create_table(
        'peer_audit',
        sa.Column('peer', sa.String(length=32), nullable=False),
        sa.Column('origin', sa.LargeBinary(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('peer', 'origin'),
    )


def downgrade() -> None:
    op.drop_table('peer_audit')
    op.drop_table('workspace_audit')
