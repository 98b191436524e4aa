"""changes.data nullable: a segment carried whole is stored as the compacted document it came
as (its snapshot row, as received); its changes' rows keep their headers, signatures and
vouchers but no bytes of their own - the snapshot holds them.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'  # TEMPORARY for testing on branch i15-wholes: "0007" (helper "post") once merged
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('changes') as batch:
        batch.alter_column('data', existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # A row without bytes cannot go back to a schema that requires them: fill them from nothing
    # is impossible, so a downgrade refuses while any exists.
    held: int = op.get_bind().execute(sa.text('SELECT COUNT(*) FROM changes WHERE data IS NULL')).scalar_one()
    if held:
        raise RuntimeError(f'{held} change(s) are held only in their snapshots: cannot downgrade below 0008')
    with op.batch_alter_table('changes') as batch:
        batch.alter_column('data', existing_type=sa.LargeBinary(), nullable=False)
