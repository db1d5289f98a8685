"""Pooled connections are pinged only after sitting idle (portal.connection_checks): a
connection the server dropped while it waited in the pool is replaced before a request
uses it, and a connection in use a moment ago costs no ping (no round trip more per
request). PostgreSQL: the server end of a pooled connection is terminated for real."""
from __future__ import annotations

import os
import time

import psycopg
import pytest
from sqlalchemy import exc, text
from sqlalchemy.engine import make_url

from portal.extensions import db

pytestmark = pytest.mark.skipif(
    not os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
    reason="terminating a server connection needs PostgreSQL (set PORTAL_TEST_DATABASE_URI)")


@pytest.fixture
def app_config():
    return {"DB_PING_AFTER_IDLE_SECONDS": 0.2}


def terminate_the_pooled_connection() -> None:
    """The pooled connection's server process ends (as at a server restart), from a
    connection of its own."""
    pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
    db.session.commit()
    db.session.close()  # back in the pool
    url = make_url(os.environ["PORTAL_TEST_DATABASE_URI"])
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         password=url.password, dbname=url.database, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):  # until it is gone
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                 (pid,)).fetchone():
                break
            time.sleep(0.02)


def test_a_connection_dropped_while_idle_is_replaced_before_use(app):
    db.engine.dispose()
    terminate_the_pooled_connection()
    time.sleep(0.3)  # idle past DB_PING_AFTER_IDLE_SECONDS
    assert db.session.execute(text("SELECT 1")).scalar() == 1


def test_a_connection_in_use_a_moment_ago_is_not_pinged(app):
    db.engine.dispose()
    terminate_the_pooled_connection()
    # At once: no ping, so the dead connection is handed out and the statement fails —
    # which shows that the test above was saved by the ping, and that busy connections
    # cost none. The pool is then invalidated and the next checkout connects afresh.
    with pytest.raises(exc.OperationalError):
        db.session.execute(text("SELECT 1"))
    db.session.rollback()
    assert db.session.execute(text("SELECT 1")).scalar() == 1
