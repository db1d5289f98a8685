"""SQLite writers wait in a queue for the write lock instead of polling for it.

SQLite has one write lock per database file. A connection that finds it taken sleeps in
its busy handler (1, 2, 5, 10 … 100 ms, growing) and tries again, so under a steady stream
of short write transactions — two web workers creating requests, the scheduler recording
deliveries — a waiter keeps waking too late and finding the lock taken again: one
process writes while the others sleep, on a machine with idle cores.

Here a connection takes its turn before its transaction's first write: a lock of its
process (one writing thread per process at a time; the others wait on it and are woken
when it is released), then an exclusive flock(2) on a file beside the database (one
process at a time; the kernel wakes the next when it is released). The turn ends when the
transaction commits or rolls back. A thread that already has the turn (a second
connection of the same thread) shares it, and SQLite's own lock and busy timeout decide
between its connections, as they do for any writer that does not queue (migrations' DDL,
another program).

Only file databases queue (an in-memory one has one connection); PostgreSQL has row
locks and needs none of this."""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading

WAIT_SECONDS = 10.0  # as PRAGMA busy_timeout: then "database is locked", as SQLite says
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


class _Queue:
    """One per process and database file, so a process holds at most one flock on it —
    by the thread that holds `lock`."""

    def __init__(self, path: str) -> None:
        self.pid = os.getpid()
        self.fd = os.open(path + "-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.lock = threading.Lock()
        self.owner: int | None = None  # the thread with the turn
        self.turns = 0  # its connections holding it

    def take(self) -> None:
        if self.owner == threading.get_ident():
            self.turns += 1
            return
        if not self.lock.acquire(timeout=WAIT_SECONDS):
            raise sqlite3.OperationalError("database is locked")
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.lock.release()
            raise
        self.owner, self.turns = threading.get_ident(), 1

    def give_back(self) -> None:
        self.turns -= 1
        if self.turns == 0:
            self.owner = None
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.lock.release()


_queues: dict[str, _Queue] = {}
_queues_lock = threading.Lock()


def _queue_for(path: str) -> _Queue:
    """This process's queue for the database at `path`. A forked child (a gunicorn worker)
    opens its own: flock locks belong to the open file, which it would share with its
    parent."""
    with _queues_lock:
        queue = _queues.get(path)
        if queue is None or queue.pid != os.getpid():
            queue = _queues[path] = _Queue(path)
        return queue


class QueuedWriterConnection(sqlite3.Connection):
    """sqlite3's connection, taking its writer's turn (take_turn) before the first write of
    a transaction and giving it back when the transaction ends."""

    _path: str | None = None
    _turn: _Queue | None = None

    def join_queue(self) -> None:
        """Called once connected: file databases queue, in-memory ones don't."""
        name = next((row[2] for row in super().execute("PRAGMA database_list")
                     if row[1] == "main"), "")
        self._path = os.path.realpath(name) if name else None

    def take_turn(self) -> None:
        if self._path is None or self._turn is not None or self.isolation_level is None:
            return  # not queued, already writing, or autocommit (nothing would end a turn)
        queue = _queue_for(self._path)
        queue.take()
        self._turn = queue

    def _end_turn(self) -> None:
        if self._turn is not None:
            queue, self._turn = self._turn, None
            queue.give_back()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._end_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._end_turn()


def is_write(statement: str) -> bool:
    return statement.lstrip()[:6].upper() in _WRITES
