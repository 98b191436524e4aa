"""changes.data nullable: a segment carried whole is stored as the compacted document it came
as (its snapshot row, as received); its changes' rows keep their headers, signatures and
vouchers but no bytes of their own - the snapshot holds them.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('changes') as batch:
        batch.alter_column('data', existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # Earlier revisions require every row's bytes: take them from the snapshot that holds them.
    from automerge._automerge import Document

    conn = op.get_bind()
    for (doc_id,) in conn.execute(sa.text('SELECT DISTINCT doc_id FROM changes WHERE data IS NULL')).all():
        snapshot: bytes = conn.execute(sa.text('SELECT data FROM snapshots WHERE doc_id = :doc_id'), {'doc_id': doc_id}).scalar_one()
        held = {change.hash: change.raw_bytes for change in Document.load(snapshot).get_changes([])}
        for row in conn.execute(sa.text('SELECT id, hash FROM changes WHERE doc_id = :doc_id AND data IS NULL'), {'doc_id': doc_id}).all():
            conn.execute(sa.text('UPDATE changes SET data = :data WHERE id = :id'), {'data': held[bytes(row.hash)], 'id': row.id})
    with op.batch_alter_table('changes') as batch:
        batch.alter_column('data', existing_type=sa.LargeBinary(), nullable=False)
