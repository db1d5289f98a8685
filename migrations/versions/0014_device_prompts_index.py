"""The agent's prompts poll reads its device's open prompts through an index that holds
all it filters on (device, status, end-user check, the prompt's deadline). With only
(device_id, status), SQLite's planner chose (status, expires_at) instead — every pending
request of every device — and a poll cost more the more requests were pending anywhere.
The new index replaces (device_id, status), whose other readers use its first columns.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 09:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

NEW = ('ix_session_requests_device_id_open_prompts',
       ['device_id', 'status', 'end_user_check', 'end_user_deadline'])
OLD = ('ix_session_requests_device_id_status', ['device_id', 'status'])


def upgrade():
    with op.batch_alter_table('session_requests', schema=None) as batch_op:
        batch_op.create_index(*NEW, unique=False)
        batch_op.drop_index(OLD[0])


def downgrade():
    with op.batch_alter_table('session_requests', schema=None) as batch_op:
        batch_op.create_index(*OLD, unique=False)
        batch_op.drop_index(NEW[0])
