"""Keeping control of sessions: "End session" on a running remote session (who asked,
when, why, and who ended it) with the agent's indexed look-up; pre-approvals and their
setting

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

END_REQUESTED = 'end_requested_at IS NOT NULL AND ended_at IS NULL'


def upgrade():
    with op.batch_alter_table('department_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preapproval_max_hours', sa.Integer(), nullable=False,
                                      server_default=sa.text('0')))
        batch_op.create_check_constraint('preapproval_max_hours_range',
                                         'preapproval_max_hours BETWEEN 0 AND 24')
    with op.batch_alter_table('remote_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('end_requested_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('end_requested_by', sa.String(length=254),
                                      nullable=True))
        batch_op.add_column(sa.Column('end_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('ended_by', sa.String(length=254), nullable=True))
        batch_op.create_index('ix_remote_sessions_device_id_end_requested', ['device_id'],
                              unique=False, sqlite_where=sa.text(END_REQUESTED),
                              postgresql_where=sa.text(END_REQUESTED))
    op.create_table(
        'pre_approvals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('department_id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('technician_id', sa.Integer(), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=True),
        sa.Column('granted_by', sa.String(length=254), nullable=False),
        sa.Column('granted_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_by', sa.String(length=254), nullable=True),
        sa.ForeignKeyConstraint(['department_id'], ['departments.id'],
                                name=op.f('fk_pre_approvals_department_id_departments'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_pre_approvals_device_id_devices'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['request_id'], ['session_requests.id'],
                                name=op.f('fk_pre_approvals_request_id_session_requests'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['technician_id'], ['users.id'],
                                name=op.f('fk_pre_approvals_technician_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pre_approvals')),
    )
    with op.batch_alter_table('pre_approvals', schema=None) as batch_op:
        batch_op.create_index('ix_pre_approvals_technician_device_expires',
                              ['technician_id', 'device_id', 'expires_at'], unique=False)
        batch_op.create_index('ix_pre_approvals_device_id_expires_at',
                              ['device_id', 'expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('pre_approvals', schema=None) as batch_op:
        batch_op.drop_index('ix_pre_approvals_device_id_expires_at')
        batch_op.drop_index('ix_pre_approvals_technician_device_expires')
    op.drop_table('pre_approvals')
    with op.batch_alter_table('remote_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_remote_sessions_device_id_end_requested')
        batch_op.drop_column('ended_by')
        batch_op.drop_column('end_reason')
        batch_op.drop_column('end_requested_by')
        batch_op.drop_column('end_requested_at')
    with op.batch_alter_table('department_settings', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('ck_department_settings_preapproval_max_hours_range'), type_='check')
        batch_op.drop_column('preapproval_max_hours')
