"""Audit trails after a restore: acknowledgements say which branch of a trail they hold (the
head's hash, its restores), and entries a later restore superseded are kept apart
(`audit_superseded`). Acknowledgements from before said only a sequence number: they are
forgotten, so the next bundle or session sends each trail from its start once (the receiver
skips what it holds).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'audit_superseded',
        sa.Column('origin', sa.LargeBinary(length=32), nullable=False),
        sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('at', sa.Integer(), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=48), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('prev_hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('signature', sa.LargeBinary(length=64), nullable=True),
        sa.Column('received_at', sa.Integer(), nullable=False),
        sa.Column('received_from', sa.String(length=32), nullable=False),
        sa.Column('superseded_at', sa.Integer(), nullable=False),
        sa.Column('superseded_by', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('origin', 'hash'),
    )
    op.drop_table('peer_audit')
    op.create_table(
        'peer_audit',
        sa.Column('peer', sa.String(length=32), nullable=False),
        sa.Column('origin', sa.LargeBinary(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('restores', sa.LargeBinary(), nullable=False),
        sa.Column('updated_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('peer', 'origin'),
    )


def downgrade() -> None:
    op.drop_table('peer_audit')
    op.create_table(
        'peer_audit',
        sa.Column('peer', sa.String(length=32), nullable=False),
        sa.Column('origin', sa.LargeBinary(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('peer', 'origin'),
    )
    op.drop_table('audit_superseded')
