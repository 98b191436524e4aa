"""A segment carried whole is logged with a row per actor, not per change: the row of an
actor's signed change stands for that actor's earlier changes in the segment too - how many
(`covered`) and their headers, packed (`covers`, appliance/covered.py). Rows written before
keep their shape.

Revision ID: 0010
Revises: 0009
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from appliance.covered import unpack_covered
from appliance.graph import causal_order

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('changes') as batch:
        batch.add_column(sa.Column('covered', sa.Integer(), nullable=False, server_default=sa.text('0')))
        batch.add_column(sa.Column('covers', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # Earlier revisions keep a row per change, in an order Automerge can apply: each document
    # with covering rows is logged again, every covered change in a row of its own without
    # bytes (the snapshot holds them), vouched for by the row that stood for it.
    conn = op.get_bind()
    columns = 'doc_id, hash, actor, seq, deps, data, signature, vouched_by, received_from, received_at'
    insert = sa.text(f'INSERT INTO changes ({columns}) VALUES (:doc_id, :hash, :actor, :seq, :deps, :data, :signature, :vouched_by, :received_from, :received_at)')
    for (doc_id,) in conn.execute(sa.text('SELECT DISTINCT doc_id FROM changes WHERE covers IS NOT NULL')).all():
        rows = conn.execute(sa.text(f'SELECT id, {columns}, covers FROM changes WHERE doc_id = :doc_id ORDER BY id'), {'doc_id': doc_id}).mappings().all()
        logged: list[dict[str, Any]] = []
        for row in rows:
            own = {name: row[name] for name in columns.split(', ')}
            for change in unpack_covered(bytes(row['covers'] or b'')):
                logged.append({**own, 'hash': change.hash, 'seq': change.seq, 'deps': change.deps, 'data': None, 'signature': None, 'vouched_by': row['hash']})
            logged.append(own)
        order = causal_order([(bytes(entry['hash']), bytes(entry['deps'])) for entry in logged])
        conn.execute(sa.text('DELETE FROM changes WHERE doc_id = :doc_id'), {'doc_id': doc_id})
        for position in order:
            conn.execute(insert, logged[position])
        newest: int = conn.execute(sa.text('SELECT max(id) FROM changes WHERE doc_id = :doc_id'), {'doc_id': doc_id}).scalar_one()
        conn.execute(sa.text('UPDATE snapshots SET upto_change_id = :newest WHERE doc_id = :doc_id AND upto_change_id >= :before'), {'newest': newest, 'doc_id': doc_id, 'before': rows[-1]['id']})
    with op.batch_alter_table('changes') as batch:
        batch.drop_column('covers')
        batch.drop_column('covered')
