"""Initial schema: identity, sealed secrets, documents and their change log, snapshots,
directory, materialised channels and messages (with an FTS5 index on SQLite), blobs, audit log
and peers' known heads.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('at', sa.Integer(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('blobs',
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('added_at', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('hash')
    )
    op.create_table('channels',
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('archived', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('members', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('channel_id')
    )
    op.create_table('directory_entries',
    sa.Column('fingerprint', sa.LargeBinary(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('added_at', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('fingerprint')
    )
    op.create_table('documents',
    sa.Column('doc_id', sa.String(length=96), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('segment_index', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('doc_id')
    )
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.create_index('ix_documents_channel', ['channel_id', 'segment_index'], unique=False)

    op.create_table('messages',
    sa.Column('row_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=26), nullable=False),
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('doc_id', sa.String(length=96), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('root_id', sa.String(length=26), nullable=True),
    sa.Column('edited_at', sa.Integer(), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('reactions', sa.Text(), nullable=False),
    sa.Column('files', sa.Text(), nullable=False),
    sa.Column('mentions', sa.Text(), nullable=False),
    sa.Column('tampered', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('row_id'),
    sa.UniqueConstraint('message_id')
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_channel', ['channel_id', 'message_id'], unique=False)
        batch_op.create_index('ix_messages_doc', ['doc_id'], unique=False)
        batch_op.create_index('ix_messages_thread', ['root_id', 'message_id'], unique=False)

    op.create_table('node_identity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_name', sa.String(length=64), nullable=False),
    sa.Column('workspace_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('node_name', sa.String(length=64), nullable=False),
    sa.Column('node_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('default_user', sa.LargeBinary(length=32), nullable=False),
    sa.Column('kdf_salt', sa.LargeBinary(length=16), nullable=False),
    sa.Column('kdf_opslimit', sa.Integer(), nullable=False),
    sa.Column('kdf_memlimit', sa.Integer(), nullable=False),
    sa.Column('sealed_data_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('peer_heads',
    sa.Column('peer', sa.String(length=32), nullable=False),
    sa.Column('doc_id', sa.String(length=96), nullable=False),
    sa.Column('heads', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('peer', 'doc_id')
    )
    op.create_table('read_markers',
    sa.Column('user_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('last_read', sa.String(length=26), nullable=False),
    sa.PrimaryKeyConstraint('user_key', 'channel_id')
    )
    op.create_table('sealed_secrets',
    sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('public_key')
    )
    op.create_table('settings',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('changes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('doc_id', sa.String(length=96), nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('actor', sa.LargeBinary(length=48), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('deps', sa.LargeBinary(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('signature', sa.LargeBinary(length=64), nullable=True),
    sa.Column('vouched_by', sa.LargeBinary(length=32), nullable=False),
    sa.Column('received_from', sa.String(length=32), nullable=True),
    sa.Column('received_at', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['doc_id'], ['documents.doc_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('doc_id', 'actor', 'seq', name='uq_changes_actor_seq'),
    sa.UniqueConstraint('hash')
    )
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.create_index('ix_changes_doc', ['doc_id', 'id'], unique=False)

    op.create_table('snapshots',
    sa.Column('doc_id', sa.String(length=96), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('upto_change_id', sa.Integer(), nullable=False),
    sa.Column('saved_at', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['doc_id'], ['documents.doc_id'], ),
    sa.PrimaryKeyConstraint('doc_id')
    )
    if op.get_bind().dialect.name == "sqlite":
        # An external-content index over messages.text, kept in step by triggers so a post
        # costs one statement; rebuilt from the documents, never the source of truth.
        op.execute(
            "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='row_id', "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        op.execute(
            "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
            "INSERT INTO messages_fts(rowid, text) VALUES (new.row_id, new.text); END"
        )
        op.execute(
            "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
            "INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.row_id, old.text); END"
        )
        op.execute(
            "CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN "
            "INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.row_id, old.text); "
            "INSERT INTO messages_fts(rowid, text) VALUES (new.row_id, new.text); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("messages_fts_insert", "messages_fts_delete", "messages_fts_update"):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE messages_fts")
    op.drop_table('snapshots')
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.drop_index('ix_changes_doc')

    op.drop_table('changes')
    op.drop_table('settings')
    op.drop_table('sealed_secrets')
    op.drop_table('read_markers')
    op.drop_table('peer_heads')
    op.drop_table('node_identity')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_thread')
        batch_op.drop_index('ix_messages_doc')
        batch_op.drop_index('ix_messages_channel')

    op.drop_table('messages')
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_index('ix_documents_channel')

    op.drop_table('documents')
    op.drop_table('directory_entries')
    op.drop_table('channels')
    op.drop_table('blobs')
    op.drop_table('audit_log')
