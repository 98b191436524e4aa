"""The search index is filled by the node, one statement per batch of new messages, rather
than by a trigger per inserted row: FTS5 costs about 30 us a row through the trigger and
about 3 us a row when a batch is indexed with INSERT ... SELECT (SQLite 3.40, bench/lan.py).
Edits and deletions keep their triggers.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER messages_fts_insert")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
            "INSERT INTO messages_fts(rowid, text) VALUES (new.row_id, new.text); END"
        )
