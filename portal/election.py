"""Electing the one scheduler: a PostgreSQL session-level advisory lock, held on a
dedicated connection for the scheduler's life (portal.jobs runs the jobs; the
`scheduler` command takes this lock first)."""
from __future__ import annotations

from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from portal.extensions import db

ADVISORY_LOCK_KEY = 0x5E55_10A7  # "session gate" scheduler election
LOCK_WAIT_SECONDS = 1  # a standby's wait on the lock, in slices a signal can end
LOCK_CHECK_SECONDS = 1  # how often the running scheduler checks it still holds the lock
# Server-side TCP keepalives on the lock's connection: if the holder's host vanishes
# (no FIN, no RST), PostgreSQL ends its session, freeing the lock, in about 5 s.
KEEPALIVES = {"tcp_keepalives_idle": 2, "tcp_keepalives_interval": 1,
              "tcp_keepalives_count": 3}


class SchedulerLock:
    """On PostgreSQL, hold a session-level advisory lock on a dedicated connection for the
    life of the scheduler; on SQLite (one machine, the demo) there is nothing to elect.

    A standby waits on the lock itself, in slices of LOCK_WAIT_SECONDS (lock_timeout), so
    it takes over the moment PostgreSQL ends the holder's session (a killed process's
    socket is closed by the kernel at once; keepalives catch a vanished host), and a
    signal still stops it between slices."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.connection = None
        self.is_elected = False  # True once holding the PostgreSQL lock

    def acquire(self, wait: bool = False) -> bool:
        with self.app.app_context():
            engine = db.engine
            if engine.dialect.name != "postgresql":
                return True
            connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                got = self._lock(connection, wait)
            except BaseException:
                _close(connection)
                raise
            if not got:
                _close(connection)
                return False
            self.connection, self.is_elected = connection, True
            return True

    @staticmethod
    def _lock(connection, wait: bool) -> bool:
        for name, value in KEEPALIVES.items():  # the server's side of this session's socket
            connection.execute(text(f"SET {name} = {int(value)}"))
        key = {"key": ADVISORY_LOCK_KEY}
        if connection.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
            return True
        if not wait:
            return False
        connection.execute(text(f"SET lock_timeout = '{int(LOCK_WAIT_SECONDS * 1000)}ms'"))
        while True:
            try:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                continue
            connection.execute(text("SET lock_timeout = 0"))
            return True

    def is_held(self) -> bool:
        """Whether the lock's connection is still there (PostgreSQL frees the lock with
        it); always True where there is nothing to elect."""
        if self.connection is None:
            return not self.is_elected
        try:
            self.connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def release(self) -> None:
        if self.connection is not None:
            _close(self.connection)
            self.connection = None
        self.is_elected = False


def _close(connection) -> None:
    # Really close the database session, which frees the lock: a plain close() would only
    # hand the connection back to the pool, lock and all.
    connection.invalidate()
    connection.close()
