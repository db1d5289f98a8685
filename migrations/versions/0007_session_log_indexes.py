"""Session logs: remote sessions newest first by (started_at, id), and per device

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('remote_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_remote_sessions_started_at_id', ['started_at', 'id'],
                              unique=False)
        batch_op.create_index('ix_remote_sessions_device_id_started_at',
                              ['device_id', 'started_at'], unique=False)


def downgrade():
    with op.batch_alter_table('remote_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_remote_sessions_device_id_started_at')
        batch_op.drop_index('ix_remote_sessions_started_at_id')
