"""Audit log filters: a department's events by action, by actor and by time, newest first by seq

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_department_id_action_seq',
                              ['department_id', 'action', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_department_id_actor_seq',
                              ['department_id', 'actor', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_department_id_occurred_at_seq',
                              ['department_id', 'occurred_at', 'seq'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_department_id_occurred_at_seq')
        batch_op.drop_index('ix_audit_events_department_id_actor_seq')
        batch_op.drop_index('ix_audit_events_department_id_action_seq')
