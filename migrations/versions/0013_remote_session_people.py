"""The Sessions page's "Person" filter on remote sessions reads a table of its own: the
people each session is about (technician, "Run as", approver; lower-cased), with the
session's department and start, indexed so that a person's sessions come newest first a
page at a time. The two lower() indexes on session_requests it replaces go (every expiry
and decision wrote entries into them).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

OLD_INDEXES = (
    ('ix_session_requests_department_id_lower_run_as', ['department_id', 'lower(run_as)']),
    ('ix_session_requests_department_id_lower_decided_by',
     ['department_id', 'lower(decided_by)']),
)

# One row per (session, person): UNION drops a person named twice (a technician who ran
# as themselves). On SQLite lower() is Python's (SQLite's own folds ASCII only), as the
# portal lower-cases new rows and the filter's value.
BACKFILL = """
    INSERT INTO remote_session_people (remote_session_id, person, department_id, started_at)
    SELECT remote_session_id, person, department_id, started_at FROM (
        SELECT s.id AS remote_session_id, {lower}(u.email) AS person,
               r.department_id AS department_id, s.started_at AS started_at
        FROM remote_sessions s JOIN session_requests r ON r.id = s.request_id
        JOIN users u ON u.id = r.technician_id
        UNION
        SELECT s.id, {lower}(r.run_as), r.department_id, s.started_at
        FROM remote_sessions s JOIN session_requests r ON r.id = s.request_id
        WHERE r.run_as IS NOT NULL AND r.run_as <> ''
        UNION
        SELECT s.id, {lower}(r.decided_by), r.department_id, s.started_at
        FROM remote_sessions s JOIN session_requests r ON r.id = s.request_id
        WHERE r.decided_by IS NOT NULL AND r.decided_by <> ''
    ) AS people"""


def _python_lower(value):
    return value.lower() if isinstance(value, str) else value


def backfill_people(connection) -> None:
    lower = 'lower'
    if connection.dialect.name == 'sqlite':
        connection.connection.driver_connection.create_function(
            'portal_lower', 1, _python_lower, deterministic=True)
        lower = 'portal_lower'
    connection.execute(sa.text(BACKFILL.format(lower=lower)))


def upgrade():
    op.create_table(
        'remote_session_people',
        sa.Column('remote_session_id', sa.Integer(), nullable=False),
        sa.Column('person', sa.Text(), nullable=False),
        sa.Column('department_id', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['remote_session_id'], ['remote_sessions.id'],
            name=op.f('fk_remote_session_people_remote_session_id_remote_sessions'),
            ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('remote_session_id', 'person',
                                name=op.f('pk_remote_session_people')),
    )
    backfill_people(op.get_bind())
    op.create_index('ix_remote_session_people_department_id_person_started_at',
                    'remote_session_people',
                    ['department_id', 'person', 'started_at', 'remote_session_id'],
                    unique=False)
    for name, _ in OLD_INDEXES:
        op.drop_index(name, table_name='session_requests')


def downgrade():
    for name, columns in OLD_INDEXES:
        op.create_index(name, 'session_requests', [sa.text(column) for column in columns],
                        unique=False)
    op.drop_index('ix_remote_session_people_department_id_person_started_at',
                  table_name='remote_session_people')
    op.drop_table('remote_session_people')
