"""A message's reactions move from its view row (`messages.reactions`) to a narrow table of
their own (`message_reactions`, one row per message that has any): an import of reactions
into segments held here rewrote a wide view row on nearly every page of `messages`.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'message_reactions',
        sa.Column('doc_id', sa.String(length=96), nullable=False),
        sa.Column('message_id', sa.String(length=26), nullable=False),
        sa.Column('reactions', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('doc_id', 'message_id'),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO message_reactions (doc_id, message_id, reactions) SELECT doc_id, message_id, reactions FROM messages WHERE reactions != '{}'")
    # SQLite drops a column in place (3.35+): the rows keep their row ids, which the search
    # index is keyed by.
    op.drop_column('messages', 'reactions')


def downgrade() -> None:
    op.add_column('messages', sa.Column('reactions', sa.Text(), nullable=False, server_default='{}'))
    op.execute(
        "UPDATE messages SET reactions = r.reactions FROM message_reactions r WHERE r.doc_id = messages.doc_id AND r.message_id = messages.message_id"
    )
    op.drop_table('message_reactions')
