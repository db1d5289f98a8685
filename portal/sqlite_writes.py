"""SQLite writers wait in a queue for the write lock, not in SQLite's busy handler.

SQLite has one write lock per database file. A connection that finds it taken sleeps in
its busy handler (1, 2, 5, 10 … 100 ms, growing) and tries again, so under a steady stream
of short write transactions — two web workers creating requests, the scheduler recording
deliveries — a waiter keeps waking too late and finding the lock taken again: one
process writes while the others sleep, on a machine with idle cores.

Here a connection takes its turn before its transaction's first write: a lock of its
process (one writing thread per process at a time; the others wait on it and are woken
when it is released), then an exclusive flock(2) on a file beside the database (one
process at a time; the waiting thread of each other process tries again every 0.5 ms,
where SQLite's busy handler sleeps longer and longer). The turn ends when the transaction
commits or rolls back; one not had within WAIT_SECONDS is "database is locked", as
SQLite's busy timeout says. A thread that already has the turn (a second connection of
the same thread) shares it, and SQLite's own lock and busy timeout decide between its
connections, as they do for any writer that does not queue (migrations' DDL, another
program).

Only file databases queue (an in-memory one has one connection); PostgreSQL has row
locks and needs none of this."""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time

WAIT_SECONDS = 10.0  # as PRAGMA busy_timeout: then "database is locked", as SQLite says
POLL_SECONDS = 0.0005
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


class _Queue:
    """One per process and database file, so a process holds at most one flock on it —
    by the thread that holds `lock`."""

    def __init__(self, path: str) -> None:
        self.pid = os.getpid()
        self.fd = _open_lock_file(path + "-writer", path)
        self.lock = threading.Lock()
        self.owner: int | None = None  # the thread with the turn
        self.turns = 0  # its connections holding it

    def take(self) -> None:
        if self.owner == threading.get_ident():
            self.turns += 1
            return
        deadline = time.monotonic() + WAIT_SECONDS
        if not self.lock.acquire(timeout=WAIT_SECONDS):
            raise sqlite3.OperationalError("database is locked")
        try:
            _flock_until(self.fd, deadline)
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


def _open_lock_file(lock_path: str, database_path: str) -> int:
    """The lock file, made with the database file's permissions (whoever writes first,
    every process that may write the database may open it); read-only where this process
    may not write it (flock needs no write access)."""
    try:
        mode = os.stat(database_path).st_mode & 0o666
    except OSError:
        mode = 0o600
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    except PermissionError:
        return os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)


def _flock_until(fd: int, deadline: float) -> None:
    """The exclusive flock, waited for until `deadline`, then "database is locked" (as
    SQLite's busy timeout says): a writer left open elsewhere — an uncommitted write in
    `flask shell`, a stopped process — makes others' writes fail after a while instead of
    hanging them (flock(2) itself has no time limit). One thread per process waits here
    (the others wait on the process's lock), trying again every POLL_SECONDS."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError("database is locked") from None
            time.sleep(POLL_SECONDS)


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
            if not self.in_transaction:  # a COMMIT that failed leaves it open
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
    """Whether sqlite3 opens a transaction for `statement`: it starts (after spaces and
    comments, which sqlite3 skips too) with INSERT, UPDATE, DELETE or REPLACE."""
    text = statement.lstrip()
    while text.startswith(("--", "/*")):
        if text.startswith("--"):
            _comment, _newline, text = text.partition("\n")
        else:
            _comment, _end, text = text[2:].partition("*/")
        text = text.lstrip()
    return text[:6].upper() in _WRITES
