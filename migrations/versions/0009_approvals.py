"""Approvals that resist fatigue and fraud: the Approvals settings; a request's
approvals required, its counted Allows and its match number; reports and their
cool-downs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('department_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_reason_required', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('approvals_required', sa.Integer(), nullable=False,
                                      server_default=sa.text('1')))
        batch_op.add_column(sa.Column('is_number_matching_required', sa.Boolean(),
                                      nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('report_cooldown_minutes', sa.Integer(),
                                      nullable=False, server_default=sa.text('30')))
        batch_op.create_check_constraint('approvals_required_range',
                                         'approvals_required BETWEEN 1 AND 5')
        batch_op.create_check_constraint('report_cooldown_range',
                                         'report_cooldown_minutes BETWEEN 1 AND 1440')
    with op.batch_alter_table('session_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approvals_required', sa.Integer(), nullable=False,
                                      server_default=sa.text('1')))
        batch_op.add_column(sa.Column('approvals_received', sa.Integer(), nullable=False,
                                      server_default=sa.text('0')))
        batch_op.add_column(sa.Column('approved_by', sa.Text(), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('match_number', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('match_choices', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('is_reported', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.create_table(
        'request_approvals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=False),
        sa.Column('approver_email', sa.String(length=254), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['request_id'], ['session_requests.id'],
                                name=op.f('fk_request_approvals_request_id_session_requests'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_request_approvals_user_id_users'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_request_approvals')),
        sa.UniqueConstraint('request_id', 'approver_email',
                            name=op.f('uq_request_approvals_request_id_approver_email')),
    )
    op.create_table(
        'request_reports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=False),
        sa.Column('department_id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('technician_id', sa.Integer(), nullable=False),
        sa.Column('reported_by', sa.String(length=254), nullable=False),
        sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('cooldown_until', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['department_id'], ['departments.id'],
                                name=op.f('fk_request_reports_department_id_departments'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_request_reports_device_id_devices'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['request_id'], ['session_requests.id'],
                                name=op.f('fk_request_reports_request_id_session_requests'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['technician_id'], ['users.id'],
                                name=op.f('fk_request_reports_technician_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_request_reports')),
        sa.UniqueConstraint('request_id', name=op.f('uq_request_reports_request_id')),
    )
    with op.batch_alter_table('request_reports', schema=None) as batch_op:
        batch_op.create_index('ix_request_reports_technician_device_until',
                              ['technician_id', 'device_id', 'cooldown_until'], unique=False)
        batch_op.create_index(batch_op.f('ix_request_reports_department_id'),
                              ['department_id'], unique=False)


def downgrade():
    with op.batch_alter_table('request_reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_request_reports_department_id'))
        batch_op.drop_index('ix_request_reports_technician_device_until')
    op.drop_table('request_reports')
    op.drop_table('request_approvals')
    with op.batch_alter_table('session_requests', schema=None) as batch_op:
        batch_op.drop_column('is_reported')
        batch_op.drop_column('match_choices')
        batch_op.drop_column('match_number')
        batch_op.drop_column('approved_by')
        batch_op.drop_column('approvals_received')
        batch_op.drop_column('approvals_required')
    with op.batch_alter_table('department_settings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_department_settings_report_cooldown_range'),
                                type_='check')
        batch_op.drop_constraint(batch_op.f('ck_department_settings_approvals_required_range'),
                                type_='check')
        batch_op.drop_column('report_cooldown_minutes')
        batch_op.drop_column('is_number_matching_required')
        batch_op.drop_column('approvals_required')
        batch_op.drop_column('is_reason_required')
