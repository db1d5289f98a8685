"""One unit of work per request, in one place.

The request's database session is committed once after the view, when the response
succeeded (status < 400), and rolled back otherwise — whatever raised, and whatever a view
caught and rendered as an error page. Views, API routes and services never commit or roll
back; services only flush.

The one exception: a service whose failure must still leave a mark (a late decision that
moved its request to timed out; a failed sign-in that counted against the throttle) calls
`keep_changes()` before raising, and what it did is committed with the error response.

Jobs and CLI commands are boundaries of their own and commit themselves.
"""
from __future__ import annotations

import sqlite3

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from portal import pg_transactions
from portal.extensions import db

_KEEP = "portal.keep_changes"


def keep_changes() -> None:
    """What this unit has done so far stays, even though it ends in an error."""
    db.session.info[_KEEP] = True


def finish(succeeded: bool) -> None:
    """Commit or roll back the current unit (honouring keep_changes)."""
    session = db.session
    keep = session.info.pop(_KEEP, False)
    current = session()  # the request's Session (the scoped proxy lacks in_transaction)
    if not (current.new or current.dirty or current.deleted):
        if not current.in_transaction():
            return  # nothing was read or written: no transaction to end
        if current.is_active and not _database_has_writes(current):
            return  # only read: the session's close at teardown ends it, as a commit would
    if succeeded or keep:
        session.commit()
    else:
        session.rollback()


def _database_has_writes(current) -> bool:
    """Whether the database holds uncommitted writes of this session's transaction. SQLite
    (Python's sqlite3) and PostgreSQL here (portal.pg_transactions) both open one only
    for a statement that writes or locks, so no open transaction means nothing to
    commit — and the ORM's commit, the larger part of a read-only request's end, is
    skipped. Any other driver, or a connection that failed: assume there is (and let the
    commit or the rollback deal with it)."""
    try:
        driver = current.connection().connection.driver_connection
    except SQLAlchemyError:
        return True
    if isinstance(driver, sqlite3.Connection):
        return driver.in_transaction
    if pg_transactions.is_psycopg(driver):
        return pg_transactions.has_open_transaction(driver)
    return True


def read_apart(statement, parameters: dict | None = None) -> list:
    """A plain read's rows, on a pooled connection of its own that goes back to the pool
    at once, not through the request's session: for a read that polls or is polled (an
    agent's poll, a link's page, a long-poll's check), where the session's transaction
    set-up and tear-down cost more than the read. It sees what is committed, not this
    unit's own unflushed or uncommitted changes, so a request reads this way before it
    writes anything."""
    with db.engine.connect() as connection:
        return connection.execute(statement, parameters or {}).all()


def release() -> None:
    """Hand the session's connection back to the pool before a long wait (a long-poll).
    Only for a unit that has changed nothing yet; it may read again afterwards."""
    session = db.session
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("release() would drop unsaved changes")
    session.close()


def init_unit_of_work(app: Flask) -> None:
    @app.after_request
    def _commit_or_roll_back(response):
        finish(response.status_code < 400)
        return response

    @app.teardown_request
    def _roll_back_on_escape(exc) -> None:
        # Only when something escaped every handler (after_request did not run).
        if exc is not None:
            db.session.info.pop(_KEEP, None)
            db.session.rollback()
