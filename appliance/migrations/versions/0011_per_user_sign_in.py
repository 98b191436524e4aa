"""Per-user sign-in and MFA: each local user's key sealed under their own secret, failed
sign-ins counted per user, TOTP secrets and recovery-code hashes. Keys still sealed under the
data key stay in sealed_secrets until their user signs in (or an admin resets their secret).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table('user_secrets'):  # a downgrade keeps it (see below)
        _create_user_secrets()
    op.create_table(
        'sign_in_failures',
        sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('locked_until', sa.Integer(), nullable=False),
        sa.Column('last_failure_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('public_key'),
    )
    op.create_table(
        'user_mfa',
        sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
        sa.Column('sealed_secret', sa.LargeBinary(), nullable=False),
        sa.Column('enrolled_at', sa.Integer(), nullable=False),
        sa.Column('last_step', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('public_key'),
    )
    op.create_table(
        'recovery_codes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
        sa.Column('salt', sa.LargeBinary(length=16), nullable=False),
        sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
        sa.Column('used_at', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_recovery_codes_user', 'recovery_codes', ['public_key'])


def _create_user_secrets() -> None:
    op.create_table(
        'user_secrets',
        sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
        sa.Column('salt', sa.LargeBinary(length=16), nullable=False),
        sa.Column('sealed', sa.LargeBinary(), nullable=False),
        sa.Column('must_change', sa.Boolean(), nullable=False),
        sa.Column('changed_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('public_key'),
    )


def downgrade() -> None:
    # Keys sealed under a user's secret cannot go back under the data key without that secret,
    # and dropping them would lose those users for good: `user_secrets` stays (the earlier
    # version ignores it; an upgrade finds the keys again). Lock-outs and MFA enrolments go.
    op.drop_index('ix_recovery_codes_user', table_name='recovery_codes')
    op.drop_table('recovery_codes')
    op.drop_table('user_mfa')
    op.drop_table('sign_in_failures')
