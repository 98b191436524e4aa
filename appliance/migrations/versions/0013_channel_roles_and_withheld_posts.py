"""Channel roles: channels.read_only (announcements: only channel admins post),
channels.former (removed members, whose nodes still receive the head), channels.requires
(the attributes a user needs, appliance/policy.py) and
messages.withheld (a post that arrived from elsewhere, by someone not a channel admin, while
its channel was read-only or archived: kept in its document, not shown). Existing rows are
neither.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('channels', sa.Column('read_only', sa.Boolean(), nullable=False, server_default=sa.text('0')))
    op.add_column('channels', sa.Column('former', sa.Text(), nullable=False, server_default=sa.text("'[]'")))
    op.add_column('channels', sa.Column('requires', sa.Text(), nullable=False, server_default=sa.text("''")))
    op.add_column('messages', sa.Column('withheld', sa.Boolean(), nullable=False, server_default=sa.text('0')))


def downgrade() -> None:
    op.drop_column('messages', 'withheld')
    op.drop_column('channels', 'requires')
    op.drop_column('channels', 'former')
    op.drop_column('channels', 'read_only')
