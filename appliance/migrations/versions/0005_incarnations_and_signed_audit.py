"""Node incarnations (an identity installed on two machines is detected) and signed audit
entries. Existing audit entries stay unsigned and verify as legacy up to the upgrade; an
existing node gets a fresh incarnation.

Revision ID: 0005
Revises: 0004
"""

import os

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('node_identity') as batch:
        batch.add_column(sa.Column('incarnation', sa.LargeBinary(length=16), nullable=True))
        batch.add_column(sa.Column('audit_legacy_until', sa.Integer(), nullable=True))
    conn = op.get_bind()
    legacy_until: int = conn.execute(sa.text('SELECT COALESCE(MAX(seq), 0) FROM audit_log')).scalar_one()
    for (row_id,) in conn.execute(sa.text('SELECT id FROM node_identity')).all():
        conn.execute(
            sa.text('UPDATE node_identity SET incarnation = :incarnation, audit_legacy_until = :legacy WHERE id = :id'),
            {'incarnation': os.urandom(16), 'legacy': legacy_until, 'id': row_id},
        )
    with op.batch_alter_table('node_identity') as batch:
        batch.alter_column('incarnation', existing_type=sa.LargeBinary(length=16), nullable=False)
        batch.alter_column('audit_legacy_until', existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table('audit_log') as batch:
        batch.add_column(sa.Column('signature', sa.LargeBinary(length=64), nullable=True))
    op.create_table('peer_incarnations',
    sa.Column('node_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('incarnation', sa.LargeBinary(length=16), nullable=False),
    sa.Column('first_seen', sa.Integer(), nullable=False),
    sa.Column('conflict_at', sa.Integer(), nullable=True),
    sa.Column('conflicting', sa.LargeBinary(length=16), nullable=True),
    sa.Column('refusals', sa.Integer(), nullable=False),
    sa.Column('audited_at', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('node_key')
    )


def downgrade() -> None:
    op.drop_table('peer_incarnations')
    with op.batch_alter_table('audit_log') as batch:
        batch.drop_column('signature')
    with op.batch_alter_table('node_identity') as batch:
        batch.drop_column('audit_legacy_until')
        batch.drop_column('incarnation')
