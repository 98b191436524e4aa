"""The search index is merged in the background, not by the commit that adds to it: FTS5's
automatic merging is turned off for messages_fts (each post's commit would otherwise now and
then merge index segments, a p99 spike on the post path) and the crisis bound raised, and the
node's upkeep (appliance/upkeep.py) runs `merge` in small slices. A search reads every segment,
merged or not.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CRISIS_MERGE = 1024  # segments on one level before a commit must merge them itself (FTS5's default: 16)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('automerge', 0)")
        op.execute(f"INSERT INTO messages_fts(messages_fts, rank) VALUES ('crisismerge', {CRISIS_MERGE})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # FTS5's defaults
        op.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('automerge', 4)")
        op.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('crisismerge', 16)")
