"""Peers seen on the LAN and the IP rules for incoming LAN sessions.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lan_peers',
    sa.Column('node_id', sa.String(length=32), nullable=False),
    sa.Column('workspace_id', sa.String(length=32), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('last_seen', sa.Integer(), nullable=False),
    sa.Column('last_sync', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('node_id')
    )
    op.create_table('network_rules',
    sa.Column('network', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('network')
    )


def downgrade() -> None:
    op.drop_table('network_rules')
    op.drop_table('lan_peers')
