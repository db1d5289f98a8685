"""Waiting for the wake-ups portal.notifier publishes: one Notifier per process and
database, with one thread shared by all its waiters (see portal.notifier for the whole
design):

- PostgreSQL: one LISTEN connection (reconnected, with back-off, when it drops; after a
  reconnect the watched requests are checked at once, as notifications may have been
  missed meanwhile);
- SQLite: one connection reading `PRAGMA data_version` every SQLITE_CHANGE_SECONDS; only
  when it changes are the watched requests read.

Both also check every watched request, in one query, every FALLBACK_SECONDS."""
from __future__ import annotations

import logging
import os
import threading
import time

from sqlalchemy import select
from sqlalchemy.engine import Engine

from portal.models import SessionRequest

log = logging.getLogger("portal.notifier")

REQUEST_CHANNEL = "portal_request"
OUTBOX_CHANNEL = "portal_outbox"
EVERY = "*"  # the payload that wakes every waiter on requests
FALLBACK_SECONDS = 5.0
SQLITE_CHANGE_SECONDS = 0.05
LISTENER_NAME = "portal notifier"  # application_name of the LISTEN connection
CHECK_CHUNK = 500


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


def existing_notifier(engine: Engine) -> Notifier | None:
    """This process's notifier for the engine's database, if anyone made it."""
    return _registry.get(_key(engine))


def notifier_for(engine: Engine) -> Notifier:
    """This process's notifier for the engine's database (made on first use)."""
    key = _key(engine)
    with _registry_lock:
        notifier = _registry.get(key)
        if notifier is None:
            notifier = _registry[key] = Notifier(engine)
        return notifier


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
