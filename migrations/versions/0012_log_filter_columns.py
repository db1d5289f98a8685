"""Session log filters at scale: audit events name the device they are about in an indexed
column (filled from the details and the actor, as services/audit.device_of does), and the
session lists' Person and State filters have indexes that find a person's or the running
sessions without reading every session of the department

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

RUNNING = 'ended_at IS NULL'
# The Sessions page's "Person" filter, matched case-blind.
PERSON_INDEXES = (
    ('ix_session_requests_department_id_lower_run_as', 'session_requests',
     ['department_id', 'lower(run_as)']),
    ('ix_session_requests_department_id_lower_decided_by', 'session_requests',
     ['department_id', 'lower(decided_by)']),
    ('ix_client_sessions_department_id_lower_username', 'client_sessions',
     ['department_id', 'lower(username)', 'started_at']),
    ('ix_client_sessions_department_id_lower_email', 'client_sessions',
     ['department_id', 'lower(email)', 'started_at']),
)

# services/audit.device_of in SQL: the details' "device", else a device event's "name",
# else the device that acted ("device:<name>"); lower case. The column is derived, not
# hashed: the chain's leaf hashes cover the other columns only, so sealed trails stay valid.
BACKFILL = {
    'postgresql': """
        UPDATE audit_events SET device = lower(left(COALESCE(
            CASE WHEN json_typeof(details -> 'device') = 'string'
                 THEN details ->> 'device' END,
            CASE WHEN target_type = 'device' AND json_typeof(details -> 'name') = 'string'
                 THEN details ->> 'name' END,
            CASE WHEN lower(actor) LIKE 'device:%' THEN substr(actor, 8) END), 254))
        WHERE device IS NULL""",
    'sqlite': """
        UPDATE audit_events SET device = portal_lower(substr(COALESCE(
            CASE WHEN json_type(details, '$.device') = 'text'
                 THEN json_extract(details, '$.device') END,
            CASE WHEN target_type = 'device' AND json_type(details, '$.name') = 'text'
                 THEN json_extract(details, '$.name') END,
            CASE WHEN lower(actor) LIKE 'device:%' THEN substr(actor, 8) END), 1, 254))
        WHERE device IS NULL""",
}


def _python_lower(value):
    return value.lower() if isinstance(value, str) else value


def backfill_devices(connection) -> None:
    """One set-based UPDATE. On SQLite lower() is Python's (SQLite's own folds ASCII only),
    so old events match the filter exactly as new ones do."""
    dialect = connection.dialect.name
    if dialect == 'sqlite':
        connection.connection.driver_connection.create_function(
            'portal_lower', 1, _python_lower, deterministic=True)
    connection.execute(sa.text(BACKFILL[dialect]))
    # An empty name (a device event with "name": "") is no device.
    connection.execute(sa.text("UPDATE audit_events SET device = NULL WHERE device = ''"))


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device', sa.String(length=254), nullable=True))
    backfill_devices(op.get_bind())
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_department_id_device_seq',
                              ['department_id', 'device', 'seq'], unique=False)
    for table, columns in (('remote_sessions', ['started_at', 'id']),
                           ('client_sessions', ['department_id', 'started_at', 'id'])):
        op.create_index(f'ix_{table}_running', table, columns, unique=False,
                        sqlite_where=sa.text(RUNNING), postgresql_where=sa.text(RUNNING))
    for name, table, columns in PERSON_INDEXES:
        op.create_index(name, table, [sa.text(column) for column in columns], unique=False)


def downgrade():
    for name, table, _ in reversed(PERSON_INDEXES):
        op.drop_index(name, table_name=table)
    for table in ('client_sessions', 'remote_sessions'):
        op.drop_index(f'ix_{table}_running', table_name=table)
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_department_id_device_seq')
        batch_op.drop_column('device')
