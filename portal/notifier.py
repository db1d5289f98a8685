"""Wake-ups after COMMIT: "session request <id> changed" and "the outbox has mail".

Publishing is one hook on every ORM session, so no service has to remember it:

- `after_flush` notes the SessionRequest rows inserted, updated or deleted through the
  unit of work, and every OutboxMessage inserted;
- `do_orm_execute` notes every INSERT into the outbox (of the model or of its table), and
  the rows a bulk UPDATE of session_requests changed — the ids in its WHERE (`id == …`
  or `id IN …` among its AND terms) when it changed any row, or the ids it RETURNs — so
  decisions' conditional UPDATEs and the expiry sweep need no call of their own. A bulk
  update whose ids can't be told wakes every waiter (who re-read). A new session request
  wakes nobody: nobody can be waiting on it yet.
- At COMMIT, on PostgreSQL one `SELECT pg_notify(…)` is sent inside the transaction, so
  the database delivers it only if the commit succeeds, to every process LISTENing; on
  SQLite the process's own waiters are woken from `after_commit`. A rollback drops what
  was noted: nobody wakes for a change that didn't happen.

Waiting: `watch_request(id)` / `watch_outbox()` give a Watch to block on. Each process
keeps one notifier per database (portal.waiters), with one thread shared by all its
waiters:

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

from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList

from portal.extensions import db
from portal.models import OutboxMessage, SessionRequest
from portal.waiters import (EVERY, LISTENER_NAME, OUTBOX_CHANNEL, REQUEST_CHANNEL, Watch,
                            existing_notifier, notifier_for)


PAYLOAD_BYTES = 7000  # NOTIFY payloads must stay under 8000 bytes
_NOTED = "portal.notifier.noted"
_OUTBOX_TABLE, _REQUESTS_TABLE = OutboxMessage.__tablename__, SessionRequest.__tablename__


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
    # The table written, whether the statement names the model (ORM-enabled) or its
    # table (Core, as the create's INSERTs do).
    written = getattr(getattr(state.statement, "table", None), "name", None)
    if written == _OUTBOX_TABLE and state.is_insert:
        _noted(state.session).outbox = True
        return None
    if written != _REQUESTS_TABLE or state.is_insert:
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
        notifier = existing_notifier(engine)
        if notifier is not None:  # else nobody in this process waits
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


# --- waiting (portal.waiters) ------------------------------------------------------------


def watch_request(request_id: int) -> Watch:
    """Needs an app context (the app's database)."""
    return notifier_for(db.engine).watch(request_id)


def watch_outbox() -> Watch:
    return notifier_for(db.engine).watch(None)


__all__ = ["LISTENER_NAME", "Watch", "init_notifier", "notifier_for", "watch_outbox",
           "watch_request"]
