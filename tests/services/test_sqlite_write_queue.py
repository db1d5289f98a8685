"""SQLite writers wait their turn (portal.sqlite_writes): a transaction that has written
holds an exclusive flock on `<database>-writer` until it commits or rolls back, so other
processes' and threads' writers wait on it — woken when it ends — instead of sleeping in
SQLite's busy handler. Reads never queue."""
from __future__ import annotations

import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import exc, text

from portal import create_app, sqlite_writes
from portal.extensions import db
from portal.sqlite_writes import is_write

TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("held")
else:
    print("free")
"""


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
sys.stdin.readline()
"""


def app_on(uri: str):
    return create_app({"TESTING": True, "SECRET_KEY": "k" * 40, "TOKEN_HASH_KEY": "t" * 40,
                       "AUDIT_KEY": "a" * 40, "SQLALCHEMY_DATABASE_URI": uri})


@pytest.fixture
def sqlite_app(tmp_path):
    app = app_on(f"sqlite:///{tmp_path / 'queue.sqlite3'}")
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
        yield app
        db.engine.dispose()


@contextmanager
def another_process_holding(lock_file: Path):
    """Another process has the writer's turn until the block ends."""
    with subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_file)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline().strip() == "holding"
        yield
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)


def write_in_a_thread(app, body: str, *, after: threading.Event | None = None):
    """Insert `body` and commit from a thread of its own (once `after` is set, if given);
    returns (the thread, an event set when it is done, the errors it met)."""
    done, errors = threading.Event(), []

    def write():
        if after is not None:
            after.wait(10)
        try:
            with app.app_context(), db.engine.connect() as connection:
                connection.execute(text("INSERT INTO notes (body) VALUES (:body)"),
                                   {"body": body})
                connection.commit()
        except BaseException as error:  # noqa: BLE001 — reported by the caller
            errors.append(error)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    return thread, done, errors


def another_process_sees(lock_file: Path) -> str:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(lock_file)],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_writing_transaction_holds_the_turn_until_it_ends(sqlite_app, tmp_path):
    lock_file = tmp_path / "queue.sqlite3-writer"
    with db.engine.connect() as connection:
        connection.execute(text("SELECT count(*) FROM notes")).scalar()
        assert not lock_file.exists() or another_process_sees(lock_file) == "free"  # reads
        connection.execute(text("INSERT INTO notes (body) VALUES ('one')"))
        assert another_process_sees(lock_file) == "held"
        connection.commit()
        assert another_process_sees(lock_file) == "free"
        connection.execute(text("UPDATE notes SET body = 'two'"))
        assert another_process_sees(lock_file) == "held"
        connection.rollback()
        assert another_process_sees(lock_file) == "free"
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT body FROM notes")).scalars().all() == ["one"]


def test_a_second_writer_waits_for_the_first_and_then_writes(sqlite_app):
    app = sqlite_app
    first_wrote, let_first_commit = threading.Event(), threading.Event()

    def first():
        with app.app_context(), db.engine.connect() as connection:
            connection.execute(text("INSERT INTO notes (body) VALUES ('first')"))
            first_wrote.set()
            let_first_commit.wait(10)
            connection.commit()

    first_thread = threading.Thread(target=first)
    first_thread.start()
    second_thread, second_done, errors = write_in_a_thread(app, "second", after=first_wrote)
    assert first_wrote.wait(10)
    assert not second_done.wait(0.5)  # waiting its turn while the first is open
    let_first_commit.set()
    assert second_done.wait(10)
    for thread in (first_thread, second_thread):
        thread.join(10)
    assert errors == []
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT body FROM notes ORDER BY id")
                                  ).scalars().all() == ["first", "second"]


def test_an_in_memory_database_does_not_queue():
    app = app_on("sqlite://")
    with app.app_context(), db.engine.connect() as connection:
        connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO notes DEFAULT VALUES"))
        assert connection.connection.driver_connection._turn is None  # mid-write
        connection.commit()


def test_a_file_database_writer_has_its_turn_mid_write(sqlite_app):
    with db.engine.connect() as connection:
        connection.execute(text("INSERT INTO notes (body) VALUES ('x')"))
        assert connection.connection.driver_connection._turn is not None
        connection.commit()
        assert connection.connection.driver_connection._turn is None


def test_a_writer_waits_for_another_process_and_writes_once_it_is_done(sqlite_app,
                                                                         tmp_path):
    with another_process_holding(tmp_path / "queue.sqlite3-writer"):
        writer, done, errors = write_in_a_thread(sqlite_app, "after")
        assert not done.wait(0.5)  # waiting for it
    assert done.wait(10)  # woken when the other process let go
    writer.join(10)
    assert errors == []
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT body FROM notes")).scalars().all() == ["after"]


def test_a_turn_not_had_in_time_is_database_is_locked(sqlite_app, tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_writes, "WAIT_SECONDS", 0.3)
    with another_process_holding(tmp_path / "queue.sqlite3-writer"):  # a writer left open
        with db.engine.connect() as connection:
            with pytest.raises(exc.OperationalError, match="database is locked"):
                connection.execute(text("INSERT INTO notes (body) VALUES ('late')"))
            connection.rollback()
    with db.engine.connect() as connection:  # nothing left behind: the next write goes
        connection.execute(text("INSERT INTO notes (body) VALUES ('now')"))
        connection.commit()
        assert connection.execute(text("SELECT body FROM notes")).scalars().all() == ["now"]


@pytest.mark.parametrize("statement, writes", [
    ("INSERT INTO notes VALUES (1)", True),
    ("  update notes SET body = 1", True),
    ("/* a comment */ DELETE FROM notes", True),
    ("-- a comment\n  /* and another */ REPLACE INTO notes VALUES (1)", True),
    ("SELECT 1", False),
    ("WITH x AS (SELECT 1) INSERT INTO notes SELECT * FROM x", False),  # sqlite3: autocommit
    ("/* never closed", False),
])
def test_writes_are_told_as_sqlite3_tells_them(statement, writes):
    assert is_write(statement) is writes
