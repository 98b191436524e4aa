"""messages.deleted_by: who set a message's delete flag when not its author. Whether such a
deletion counts depends on who is an admin, so the node re-reads these messages whenever the
admins change. Rows that may have one (deleted or tampered) start as '' - not yet known - and
are re-read when the node next opens.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('messages', sa.Column('deleted_by', sa.String(length=64), nullable=True))
    op.create_index('ix_messages_deleted_by', 'messages', ['deleted_by'], unique=False)
    op.execute("UPDATE messages SET deleted_by = '' WHERE deleted OR tampered")


def downgrade() -> None:
    op.drop_index('ix_messages_deleted_by', table_name='messages')
    op.drop_column('messages', 'deleted_by')
