"""PostgreSQL transactions begin at the first statement that needs one
(portal/pg_transactions.py): a request that only reads sends no BEGIN and no COMMIT, and
whatever writes or locks is one transaction as before — atomic, its locks held to the
end, its savepoints working."""
from __future__ import annotations

import os

import psycopg
import pytest
from factories import NOW
from psycopg.pq import TransactionStatus
from sqlalchemy import create_engine, event, select, text, update

from portal.extensions import db
from portal.models import Department
from portal.pg_transactions import is_plain_read
from portal.services import devices
from portal.services.actors import CLI


@pytest.mark.parametrize(("statement", "plain"), [
    ("SELECT devices.id FROM devices WHERE devices.id = %(id)s", True),
    ("  select 1", True),
    ("SELECT devices.id FROM devices WHERE devices.id = %(id)s FOR UPDATE", False),
    ("SELECT id FROM outbox_messages LIMIT 10 FOR UPDATE SKIP LOCKED", False),
    ("SELECT id FROM devices FOR NO KEY UPDATE", False),
    ("SELECT id FROM devices FOR SHARE", False),
    ("SELECT pg_notify(%(c0)s, %(p0)s)", False),
    ("SELECT pg_advisory_xact_lock(42)", False),
    ("SELECT nextval('devices_id_seq')", False),
    ("INSERT INTO devices (name) VALUES (%(name)s)", False),
    ("UPDATE approval_links SET first_opened_at=%(now)s", False),
    ("DELETE FROM devices", False),
    ("SAVEPOINT sa_savepoint_1", False),
    ("WITH x AS (UPDATE devices SET os = 'x' RETURNING id) SELECT * FROM x", False),
    ("CREATE TABLE t (id int)", False),
])
def test_only_a_select_that_locks_and_changes_nothing_runs_outside_a_transaction(
        statement, plain):
    assert is_plain_read(statement) is plain


pytestmark_pg = pytest.mark.skipif(
    not os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
    reason="PostgreSQL's transactions (set PORTAL_TEST_DATABASE_URI)")


def _driver():
    return db.session.connection().connection.driver_connection


def _other_connection():
    url = db.engine.url.set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


@pytestmark_pg
def test_reads_open_no_transaction_and_the_first_write_opens_one(app, make):
    make.department("QA Team")
    db.session.scalar(select(Department.name))
    driver = _driver()
    assert driver.info.transaction_status == TransactionStatus.IDLE  # no BEGIN was sent
    db.session.execute(update(Department).values(name="QA"))
    assert driver.info.transaction_status == TransactionStatus.INTRANS
    db.session.execute(update(Department).values(name="QA again"))
    db.session.rollback()  # both writes go, as one transaction's
    assert db.session.scalar(select(Department.name)) == "QA Team"
    assert _driver().info.transaction_status == TransactionStatus.IDLE


@pytestmark_pg
def test_a_locking_read_begins_the_transaction_and_holds_its_lock_to_the_end(app, make):
    department = make.department("QA Team")
    db.session.execute(select(Department.id).where(Department.id == department.id)
                       .with_for_update())
    assert _driver().info.transaction_status == TransactionStatus.INTRANS
    with _other_connection() as other:
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("SELECT id FROM departments WHERE id = %s FOR UPDATE NOWAIT",
                          (department.id,))
        db.session.commit()
        other.execute("SELECT id FROM departments WHERE id = %s FOR UPDATE NOWAIT",
                      (department.id,))


@pytestmark_pg
def test_a_savepoint_opened_first_is_inside_a_transaction(app, make):
    make.department("QA Team")
    with db.session.begin_nested():
        db.session.execute(update(Department).values(name="QA"))
    db.session.rollback()  # the savepoint's release did not commit the transaction
    assert db.session.scalar(select(Department.name)) == "QA Team"


@pytestmark_pg
def test_an_explicit_autocommit_connection_is_left_as_set(app):
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_try_advisory_lock(8)"))
        driver = conn.connection.driver_connection
        assert driver.info.transaction_status == TransactionStatus.IDLE
        conn.execute(text("SELECT pg_advisory_unlock(8)"))


@pytestmark_pg
def test_an_agent_poll_sends_its_reads_outside_any_transaction(client, make):
    _device, token = devices.create_device(department=make.department("QA Team"),
                                           name="WIN-0859G9I39J0", os="Windows 11",
                                           ip_address="10.0.0.5", group_id=None,
                                           actor=CLI, now=NOW)
    headers = {"Authorization": f"Bearer {token}"}
    statuses = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statuses.append((statement.split()[0], cursor.connection.info.transaction_status))

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        first = client.get("/api/v1/agent/prompts", headers=headers)
        statuses.clear()  # the first poll records the token's use (an UPDATE)
        response = client.get("/api/v1/agent/prompts", headers=headers)
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    assert (first.status_code, response.status_code) == (200, 200)
    assert statuses and all(status == TransactionStatus.IDLE and verb == "SELECT"
                            for verb, status in statuses), statuses


@pytestmark_pg
def test_an_engine_at_a_stricter_isolation_level_begins_as_psycopg_does(app):
    """At REPEATABLE READ the SELECTs before the first write belong in the transaction's
    snapshot: such an engine's connections are left out of autocommit."""
    engine = create_engine(db.engine.url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            driver = conn.connection.driver_connection
            assert driver.info.transaction_status == TransactionStatus.INTRANS
    finally:
        engine.dispose()


@pytestmark_pg
def test_a_server_side_cursor_is_declared_inside_a_transaction(app, make):
    make.department("QA Team")
    with db.engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(
            select(Department.name))
        assert result.scalars().all() == ["QA Team"]
