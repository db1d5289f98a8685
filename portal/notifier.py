"""Wake-ups after COMMIT: "session request <id> changed" and "the outbox has mail".

Publishing is one hook on every ORM session, so no service has to remember it:

- `after_flush` notes the SessionRequest rows inserted, updated or deleted through the
  unit of work, and every OutboxMessage inserted;
- `do_orm_execute` notes the rows a bulk `update(SessionRequest)` changed — the ids in
  its WHERE (`id == …` or `id IN …` among its AND terms) when it changed any row, or the
  ids it RETURNs — so decisions' conditional UPDATEs and the expiry sweep need no call
  of their own. A bulk update whose ids can't be told wakes every waiter (who re-read).
- At COMMIT, on PostgreSQL one `SELECT pg_notify(…)` is sent inside the transaction, so
  the database delivers it only if the commit succeeds, to every process LISTENing; on
  SQLite the process's own waiters are woken from `after_commit`. A rollback drops what
  was noted: nobody wakes for a change that didn't happen.

Waiting: `watch_request(id)` / `watch_outbox()` give a Watch to block on. Each process
keeps one notifier per database, with one thread shared by all its waiters:

- PostgreSQL: one LISTEN connection (reconnected, with back-off, when it drops; after a
  reconnect the watched requests are checked at once, as notifications may have been
  missed meanwhile);
- SQLite: one connection reading `PRAGMA data_version` every 50 ms (it changes when any
  other connection, of this process or another, commits); only then are the watched
  requests read — so a decision made by another process (a second gunicorn worker, the
  scheduler) is seen within ~50 ms without each waiter polling.

Both also check every watched request, in one query, every FALLBACK_SECONDS.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList

from portal.extensions import db
from portal.models import OutboxMessage, SessionRequest

log = logging.getLogger("portal.notifier")

REQUEST_CHANNEL = "portal_request"
OUTBOX_CHANNEL = "portal_outbox"
EVERY = "*"  # the payload that wakes every waiter on requests
FALLBACK_SECONDS = 5.0
SQLITE_CHANGE_SECONDS = 0.05
LISTENER_NAME = "portal notifier"  # application_name of the LISTEN connection
PAYLOAD_BYTES = 7000  # NOTIFY payloads must stay under 8000 bytes
CHECK_CHUNK = 500
_NOTED = "portal.notifier.noted"


# --- publishing ------------------------------------------------------------------------


@dataclass
class _Noted:
    """What the session's transaction changed that someone may wait for."""
    request_ids: set[int] = field(default_factory=set)
    every_request: bool = False
    outbox: bool = False

    def __bool__(self) -> bool:
        return bool(self.request_ids or self.every_request or self.outbox)


def _noted(session: Session) -> _Noted:
    return session.info.setdefault(_NOTED, _Noted())


def _after_flush(session: Session, _flush_context) -> None:
    noted = None
    for obj in session.new:
        if isinstance(obj, SessionRequest):
            (noted := noted or _noted(session)).request_ids.add(obj.id)
        elif isinstance(obj, OutboxMessage):
            (noted := noted or _noted(session)).outbox = True
    for obj in session.dirty:
        if isinstance(obj, SessionRequest) and session.is_modified(obj):
            (noted := noted or _noted(session)).request_ids.add(obj.id)
    for obj in session.deleted:
        if isinstance(obj, SessionRequest):
            (noted := noted or _noted(session)).request_ids.add(obj.id)


def ids_in_where(statement) -> set[int] | None:
    """The SessionRequest ids an UPDATE is limited to by one of its AND terms
    (`id == 5`, `id IN (…)`), or None when it isn't."""
    where = statement.whereclause
    if where is None:
        return None
    terms = where.clauses if isinstance(where, BooleanClauseList) and \
        where.operator is operators.and_ else [where]
    id_column = SessionRequest.__table__.c.id
    for term in terms:
        if not isinstance(term, BinaryExpression) or not isinstance(term.right, BindParameter):
            continue
        if not (hasattr(term.left, "compare") and term.left.compare(id_column)):
            continue
        value = term.right.effective_value
        if term.operator is operators.eq and value is not None:
            return {int(value)}
        if term.operator is operators.in_op and value is not None:
            return {int(v) for v in value}
    return None


def _returned_id_position(statement) -> int | None:
    id_column = SessionRequest.__table__.c.id
    for position, column in enumerate(getattr(statement, "_returning", ()) or ()):
        if hasattr(column, "compare") and column.compare(id_column):
            return position
    return None


def _on_orm_execute(state: ORMExecuteState):
    if not (state.is_update or state.is_insert or state.is_delete):
        return None
    mapper = state.bind_mapper
    cls = mapper.class_ if mapper is not None else None
    if cls is OutboxMessage and state.is_insert:
        _noted(state.session).outbox = True
        return None
    if cls is not SessionRequest or state.is_insert:
        return None
    statement = state.statement
    position = _returned_id_position(statement)
    result = state.invoke_statement()
    noted = _noted(state.session)
    if position is not None:  # e.g. the expiry sweep: the ids it changed come back
        frozen = result.freeze()
        noted.request_ids.update(int(row[position]) for row in frozen.data)
        return frozen()
    ids = ids_in_where(statement)
    if ids is None:
        noted.every_request = True
    elif result.rowcount:  # a conditional UPDATE that lost changed nothing
        noted.request_ids.update(ids)
    return result


def _payloads(noted: _Noted) -> list[tuple[str, str]]:
    notes = []
    if noted.every_request:
        notes.append((REQUEST_CHANNEL, EVERY))
    elif noted.request_ids:
        chunk: list[str] = []
        size = 0
        for request_id in sorted(noted.request_ids):
            item = str(request_id)
            if chunk and size + len(item) + 1 > PAYLOAD_BYTES:
                notes.append((REQUEST_CHANNEL, ",".join(chunk)))
                chunk, size = [], 0
            chunk.append(item)
            size += len(item) + 1
        notes.append((REQUEST_CHANNEL, ",".join(chunk)))
    if noted.outbox:
        notes.append((OUTBOX_CHANNEL, ""))
    return notes


def _before_commit(session: Session) -> None:
    if session.in_nested_transaction() or not session.info.get(_NOTED):
        return
    session.flush()  # what the commit would flush next is noted too
    connection = session.connection()
    noted = session.info[_NOTED]
    if connection.dialect.name == "postgresql":
        notes = _payloads(noted)
        calls = ", ".join(f"pg_notify(:c{i}, :p{i})" for i in range(len(notes)))
        params = {}
        for i, (channel, payload) in enumerate(notes):
            params[f"c{i}"], params[f"p{i}"] = channel, payload
        session.execute(text(f"SELECT {calls}"), params)
        session.info.pop(_NOTED, None)  # the database delivers it (or drops it on failure)
    else:
        session.info[_NOTED + ".engine"] = connection.engine


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    noted = session.info.pop(_NOTED, None)
    engine = session.info.pop(_NOTED + ".engine", None)
    if noted and engine is not None:
        notifier = _registry.get(_key(engine))
        if notifier is not None:
            notifier.publish(noted.request_ids, every_request=noted.every_request,
                             outbox=noted.outbox)


def _after_transaction_end(session: Session, transaction) -> None:
    """Rolled back or closed (after a commit, after_commit has published already)."""
    if transaction.parent is not None:
        return  # a savepoint: the outer transaction's changes are still on their way
    session.info.pop(_NOTED, None)
    session.info.pop(_NOTED + ".engine", None)


_HOOKS = (("after_flush", _after_flush), ("do_orm_execute", _on_orm_execute),
          ("before_commit", _before_commit), ("after_commit", _after_commit),
          ("after_transaction_end", _after_transaction_end))


def init_notifier(app: Flask) -> None:
    """Install the publishing hooks (once per process, for every ORM session)."""
    for name, hook in _HOOKS:
        if not event.contains(Session, name, hook):
            event.listen(Session, name, hook)


# --- waiting -----------------------------------------------------------------------------


class Watch:
    """One waiter's subscription: `wait()` returns True when woken (and re-arms)."""

    def __init__(self, notifier: Notifier, request_id: int | None) -> None:
        self.notifier = notifier
        self.request_id = request_id
        self.expected: str | None = None  # the status the waiter last read
        self._event = threading.Event()

    def expect(self, status: str) -> None:
        """The waiter has read `status`; the fallback check wakes it if that changes."""
        self.expected = status

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        woken = self._event.wait(max(timeout, 0))
        self._event.clear()
        return woken

    def close(self) -> None:
        self.notifier._forget(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _key(engine: Engine) -> tuple[int, str]:
    return os.getpid(), engine.url.render_as_string(hide_password=False)


_registry: dict[tuple[int, str], Notifier] = {}
_registry_lock = threading.Lock()


def notifier_for(engine: Engine) -> Notifier:
    """This process's notifier for the engine's database (made on first use)."""
    key = _key(engine)
    with _registry_lock:
        notifier = _registry.get(key)
        if notifier is None:
            notifier = _registry[key] = Notifier(engine)
        return notifier


def watch_request(request_id: int) -> Watch:
    """Needs an app context (the app's database)."""
    return notifier_for(db.engine).watch(request_id)


def watch_outbox() -> Watch:
    return notifier_for(db.engine).watch(None)


class Notifier:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgresql = engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        self._requests: dict[int, set[Watch]] = {}
        self._outbox: set[Watch] = set()
        self._thread: threading.Thread | None = None
        self.listener_connects = 0  # how many times the LISTEN connection was (re)made

    # subscriptions
    def watch(self, request_id: int | None) -> Watch:
        watch = Watch(self, request_id)
        with self._lock:
            if request_id is None:
                self._outbox.add(watch)
            else:
                self._requests.setdefault(request_id, set()).add(watch)
            if self._thread is None or not self._thread.is_alive():
                target = self._listen if self.is_postgresql else self._watch_sqlite
                self._thread = threading.Thread(target=target, name=LISTENER_NAME,
                                                daemon=True)
                self._thread.start()
        return watch

    def _forget(self, watch: Watch) -> None:
        with self._lock:
            if watch.request_id is None:
                self._outbox.discard(watch)
            else:
                watches = self._requests.get(watch.request_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._requests[watch.request_id]

    def publish(self, request_ids, *, every_request: bool = False,
                outbox: bool = False) -> None:
        with self._lock:
            if every_request:
                woken = [w for watches in self._requests.values() for w in watches]
            else:
                woken = [w for i in request_ids for w in self._requests.get(i, ())]
            if outbox:
                woken += self._outbox
        for watch in woken:
            watch.wake()

    def _has_watches(self) -> bool:
        with self._lock:
            return bool(self._requests or self._outbox)

    def check(self) -> None:
        """Wake each waiter whose request no longer has the status it last read (or is
        gone): one query for every watched request of the process."""
        with self._lock:
            watched = {i: [w for w in ws if w.expected is not None]
                       for i, ws in self._requests.items()}
        ids = sorted(i for i, ws in watched.items() if ws)
        if not ids:
            return
        statuses: dict[int, str] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(ids), CHECK_CHUNK):
                statuses.update(connection.execute(
                    select(SessionRequest.id, SessionRequest.status)
                    .where(SessionRequest.id.in_(ids[start:start + CHECK_CHUNK]))).all())
        for request_id in ids:
            for watch in watched[request_id]:
                if statuses.get(request_id) != watch.expected:
                    watch.wake()

    # PostgreSQL: one LISTEN connection per process
    def _listen(self) -> None:
        delay = 0.1
        while True:
            listener = None
            try:
                raw = self.engine.raw_connection()
                listener = raw.driver_connection
                raw.detach()  # ours for good: not the pool's, nor reset by it
                listener.autocommit = True
                listener.execute(f"SET application_name = '{LISTENER_NAME}'")
                listener.execute(f"LISTEN {REQUEST_CHANNEL}")
                listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
                self.listener_connects += 1
                delay = 0.1
                self.check()  # whatever changed while nobody listened
                while True:
                    for note in listener.notifies(timeout=FALLBACK_SECONDS):
                        self._dispatch(note.channel, note.payload)
                    listener.execute("SELECT 1")  # a dead connection shows here
                    self.check()
            except Exception:  # noqa: BLE001 (the connection dropped: make a new one)
                log.warning("LISTEN connection lost; reconnecting in %.1f s", delay,
                            exc_info=True)
            finally:
                if listener is not None:
                    try:
                        listener.close()
                    except Exception:  # noqa: BLE001
                        pass
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == OUTBOX_CHANNEL:
            self.publish((), outbox=True)
        elif payload == EVERY:
            self.publish((), every_request=True)
        else:
            self.publish({int(p) for p in payload.split(",") if p.isdigit()})

    # SQLite: PRAGMA data_version says when another connection committed
    def _watch_sqlite(self) -> None:
        connection = None
        version = None
        checked = time.monotonic()
        while True:
            time.sleep(SQLITE_CHANGE_SECONDS)
            if not self._has_watches():
                continue
            try:
                if connection is None:
                    connection = self.engine.connect()
                    connection.detach()
                now = connection.exec_driver_sql("PRAGMA data_version").scalar()
                connection.rollback()
                due = time.monotonic() - checked >= FALLBACK_SECONDS
                if now != version or due:
                    if now != version:
                        self.publish((), outbox=True)
                    version = now
                    checked = time.monotonic()
                    self.check()
            except Exception:  # noqa: BLE001 (e.g. the file is gone: try again)
                log.warning("SQLite change watch failed", exc_info=True)
                if connection is not None:
                    try:
                        connection.close()
                    except Exception:  # noqa: BLE001
                        pass
                    connection = None
                time.sleep(1)
