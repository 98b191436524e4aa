"""changes.data nullable: a segment carried whole is stored as the compacted document it came
as (its snapshot row, as received); its changes' rows keep their headers, signatures and
vouchers but no bytes of their own - the snapshot holds them. And no unique index on the hash.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = "0007"
branch_labels = None
depends_on = None


# The table is rebuilt anyway: its unnamed UNIQUE (hash) goes too. Nothing looks a change up by
# its hash alone, and (doc_id, actor, seq) already keeps a change from being stored twice; the
# hash index was the costliest write of an import (random keys, a page each).
_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    with op.batch_alter_table('changes', naming_convention=_NAMES) as batch:
        batch.alter_column('data', existing_type=sa.LargeBinary(), nullable=True)
        batch.drop_constraint('uq_changes_hash', type_='unique')


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
        batch.create_unique_constraint('uq_changes_hash', ['hash'])
