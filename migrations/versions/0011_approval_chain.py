"""The approval chain: "If the end user doesn't answer, ask the email approvers",
"Escalate to" and "Escalate after (seconds)"; on each session request when its next step
falls due (indexed, for the job) and when the fallback and the escalation were mailed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('department_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_fallback_to_email', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('escalation_recipients', sa.Text(), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('escalate_after_seconds', sa.Integer(), nullable=False,
                                      server_default=sa.text('120')))
        batch_op.create_check_constraint('escalate_after_range',
                                         'escalate_after_seconds BETWEEN 30 AND 3600')
    with op.batch_alter_table('session_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chain_due_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('fallback_mailed_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('escalated_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index('ix_session_requests_chain_due_at', ['chain_due_at'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('session_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_session_requests_chain_due_at')
        batch_op.drop_column('escalated_at')
        batch_op.drop_column('fallback_mailed_at')
        batch_op.drop_column('chain_due_at')
    with op.batch_alter_table('department_settings', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('ck_department_settings_escalate_after_range'), type_='check')
        batch_op.drop_column('escalate_after_seconds')
        batch_op.drop_column('escalation_recipients')
        batch_op.drop_column('is_fallback_to_email')
