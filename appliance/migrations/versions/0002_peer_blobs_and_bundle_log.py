"""Blobs each peer holds, and the log of bundle decisions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('peer_blobs',
    sa.Column('peer', sa.String(length=32), nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('doc_id', sa.String(length=96), nullable=True),
    sa.Column('heads', sa.LargeBinary(), nullable=True),
    sa.Column('updated_at', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('peer', 'hash')
    )
    op.create_table('bundle_log',
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('bundle_id', sa.LargeBinary(length=16), nullable=True),
    sa.Column('sender', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=24), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('decided_at', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('digest')
    )


def downgrade() -> None:
    op.drop_table('bundle_log')
    op.drop_table('peer_blobs')
