"""Approval links keep the sign-in rule they were mailed with and record their first
opening once; sign-in sessions record when they were last used (idle timeout)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('approval_links', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_sign_in_required', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))
        batch_op.add_column(sa.Column('first_opened_at', sa.DateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('login_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_seen_at', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade():
    with op.batch_alter_table('login_sessions', schema=None) as batch_op:
        batch_op.drop_column('last_seen_at')
    with op.batch_alter_table('approval_links', schema=None) as batch_op:
        batch_op.drop_column('first_opened_at')
        batch_op.drop_column('is_sign_in_required')
