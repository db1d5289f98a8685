"""PostgreSQL transactions begin at the first statement that needs one, not at the first
statement.

psycopg sends BEGIN as a round trip of its own before a transaction's first statement,
and the transaction ends with another (COMMIT or ROLLBACK). A request that only reads —
an agent's poll, an approval page opened again, a long-poll's check — paid two round
trips on top of its one or two SELECTs, about half of such a request's time on this
machine.

Here every pooled psycopg connection is in autocommit mode, and BEGIN is sent just
before the first statement that needs a transaction: anything but a plain SELECT
(INSERT, UPDATE, DELETE, SAVEPOINT, DDL, a SELECT … FOR UPDATE / FOR SHARE, one that
calls an advisory-lock, notify or sequence function, a server-side cursor's DECLARE).
From there on the transaction is what it always was, and SQLAlchemy's commit and
rollback end it (psycopg sends COMMIT or ROLLBACK only when a transaction is open, so a
request that only read sends neither).

What this changes: the plain SELECTs before a transaction's first write each run on
their own, not inside it. Under READ COMMITTED, PostgreSQL's default and the one this
project uses, every statement of a transaction takes a new snapshot anyway, and a plain
SELECT takes no lock a transaction would keep; so what each statement sees, and every
conditional UPDATE that settles a race, is unchanged. A connection given an isolation
level of its own (`execution_options(isolation_level=…)`, e.g. the scheduler election's
AUTOCOMMIT connection) is left as SQLAlchemy set it, and so is every connection of an
engine or server at another level than READ COMMITTED (checked at a connection's first
checkout), where the SELECTs before the first write belong in the transaction's
snapshot."""
from __future__ import annotations

from functools import lru_cache

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

# Functions a SELECT may call whose effect lasts until the transaction ends, or that
# must not run outside one.
_TRANSACTIONAL = ("FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE",
                  "PG_ADVISORY", "PG_TRY_ADVISORY", "PG_NOTIFY", "NEXTVAL", "SETVAL",
                  "TXID_CURRENT", "PG_CURRENT_XACT_ID", "SET_CONFIG")


@lru_cache(maxsize=4096)  # statements come from SQLAlchemy's compiled cache: few and reused
def is_plain_read(statement: str) -> bool:
    """A SELECT that takes no lock and changes nothing: safe outside a transaction."""
    text = statement.lstrip()
    if text[:6].upper() != "SELECT":
        return False
    upper = text.upper()
    return not any(word in upper for word in _TRANSACTIONAL)


def is_psycopg(dbapi_connection) -> bool:
    return isinstance(dbapi_connection, psycopg.Connection)


def has_open_transaction(driver) -> bool:
    """Whether a transaction is open on the connection: with autocommit on, only after a
    statement that needed one (a connection SQLAlchemy took out of autocommit is
    assumed to have one)."""
    return not driver.autocommit or driver.info.transaction_status != TransactionStatus.IDLE


_LAZY = "portal.begin_when_needed"  # in a pooled connection's info: this applies to it


def _is_read_committed(dbapi_connection) -> bool:
    """Whether the connection, as SQLAlchemy set it up, runs at READ COMMITTED: no level
    set on the engine (none on the driver, autocommit off) and the server's default.
    At a stricter level the SELECTs before the first write would fall outside the
    transaction's snapshot; an engine-wide AUTOCOMMIT is as asked."""
    if dbapi_connection.autocommit or dbapi_connection.isolation_level is not None:
        return False
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SHOW default_transaction_isolation")
        level = cursor.fetchone()[0]
    dbapi_connection.rollback()  # the SHOW opened a transaction
    return level == "read committed"


@event.listens_for(Pool, "checkout")
def _autocommit_until_needed(dbapi_connection, connection_record, connection_proxy) -> None:
    if not is_psycopg(dbapi_connection):
        return
    if _LAZY not in connection_record.info:  # its first checkout: the engine's level is set
        connection_record.info[_LAZY] = _is_read_committed(dbapi_connection)
    # SQLAlchemy turns autocommit off again when it resets a connection that was given
    # an isolation level of its own; every checkout sets it back (no round trip).
    if connection_record.info[_LAZY] and not dbapi_connection.autocommit \
            and dbapi_connection.info.transaction_status == TransactionStatus.IDLE:
        dbapi_connection.autocommit = True


@event.listens_for(Engine, "before_cursor_execute")
def _begin_when_needed(conn, cursor, statement, parameters, context, executemany) -> None:
    driver = cursor.connection
    if not is_psycopg(driver) or not driver.autocommit \
            or driver.info.transaction_status != TransactionStatus.IDLE:
        return
    if not conn.info.get(_LAZY):
        return  # not at READ COMMITTED (see _is_read_committed): as psycopg does
    if conn.get_execution_options().get("isolation_level") is not None:
        return  # an isolation level of its own (AUTOCOMMIT for the election): as set
    if is_plain_read(statement) and not (
            context is not None and context.execution_options.get("stream_results")):
        return  # (a server-side cursor's DECLARE needs a transaction)
    driver.execute("BEGIN")
