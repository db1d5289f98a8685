"""Long-polls wait on the notifier (portal.notifier), not on the database: a waiter wakes
soon after a commit made elsewhere, never for a rolled-back change, at its request's own
deadline, after the LISTEN connection is killed (PostgreSQL) — and a crowd of waiters
issues almost no queries while nothing happens. Real threads, real database, both kinds."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.engine import Engine

from portal import notifier
from portal.clock import SystemClock
from portal.domain.requests import Status
from portal.extensions import db
from portal.models import SessionRequest, User
from portal.services import accounts, decisions, departments
from portal.services import requests as service
from portal.services.actors import CLI, Actor

DEVICE = "WIN-0859G9I39J0"
clock = SystemClock()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def world(make):
    """QA Team asks for email authorization (so requests stay pending), its approver."""
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user("tech@example.com", "technician", department)
    make.user("approver@example.com", "approver", department)
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True,
              "email_recipients": "approver@example.com"}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=utcnow())
    db.session.commit()
    return department


def new_request(world) -> int:
    tech = accounts.find_user("tech@example.com")
    req = service.create_session_request(technician=tech, device_name=DEVICE,
                                         actor=Actor.for_user(tech), now=utcnow(),
                                         base_url="http://portal.test")
    db.session.commit()
    assert req.status == "pending"
    return req.id


def in_thread(app, work, *, commit=True, delay=0.0):
    """`work()` in an app context (its own session and connection) of another thread,
    committed or rolled back; returns (thread, times) where times["done"] is when the
    commit (or rollback) returned."""
    times, failures = {}, []

    def run():
        try:
            time.sleep(delay)
            with app.app_context():
                work()
                if commit:
                    db.session.commit()
                else:
                    db.session.rollback()
                times["done"] = time.monotonic()
        except Exception as exc:  # noqa: BLE001 (surfaced by the caller)
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    times["failures"] = failures
    return thread, times


def deny(request_id):
    def work():
        approver = db.session.scalar(db.select(User).filter_by(email="approver@example.com"))
        decisions.decide_in_portal(user=approver, request_id=request_id, decision="deny",
                                   actor=Actor.for_user(approver), now=utcnow())
    return work


def test_a_waiter_wakes_soon_after_a_commit_made_by_another_thread(app, world):
    rid = new_request(world)
    db.session.close()
    thread, times = in_thread(app, deny(rid), delay=0.3)
    started = time.monotonic()
    service.wait_for_change(rid, Status.PENDING, 10, clock)
    woke = time.monotonic()
    thread.join(5)
    assert not times["failures"]
    assert woke - started < 5
    assert 0 <= woke - times["done"] < 0.5  # typically a few milliseconds
    assert db.session.get(SessionRequest, rid).status == "denied"


def test_a_rolled_back_change_wakes_nobody_and_the_next_commit_does(app, world):
    rid = new_request(world)
    with notifier.watch_request(rid) as watch:
        # Quiet first: the request's own creation (or an earlier test's request with the
        # same id) may still be on its way to a listener that was already running.
        while watch.wait(0.5):
            pass
        thread, times = in_thread(app, deny(rid), commit=False)
        thread.join(5)
        assert not times["failures"] and "done" in times
        assert not watch.wait(1.0)

        thread, times = in_thread(app, deny(rid))
        assert watch.wait(3.0)
        thread.join(5)
        assert not times["failures"]


def test_the_expiry_sweep_wakes_the_waiters_of_what_it_timed_out(app, world):
    rids = [new_request(world) for _ in range(3)]
    past = utcnow() - timedelta(seconds=1)
    with notifier.watch_request(rids[0]) as first, notifier.watch_request(rids[2]) as last:
        db.session.execute(update(SessionRequest).where(SessionRequest.id.in_(rids))
                           .values(expires_at=past))
        db.session.commit()  # a bulk UPDATE by id list: both are told
        assert first.wait(3.0) and last.wait(3.0)
        assert decisions.expire_overdue(utcnow()) == rids
        db.session.commit()
        assert first.wait(3.0) and last.wait(3.0)


def test_a_waiter_answers_at_its_requests_deadline_without_any_write(app, world):
    rid = new_request(world)
    due = utcnow() + timedelta(seconds=1)
    db.session.execute(update(SessionRequest).where(SessionRequest.id == rid)
                       .values(expires_at=due))
    db.session.commit()
    db.session.close()
    service.wait_for_change(rid, Status.PENDING, 10, clock)
    late = (utcnow() - due).total_seconds()
    assert 0 <= late < 0.5
    assert db.session.get(SessionRequest, rid).status == "pending"  # no sweep ran


def test_an_unchanged_request_is_held_for_the_whole_wait(app, world):
    rid = new_request(world)
    started = time.monotonic()
    service.wait_for_change(rid, Status.PENDING, 1, clock)
    assert 0.95 <= time.monotonic() - started < 2


def test_many_waiters_issue_almost_no_queries_while_nothing_happens(app, world):
    rids = [new_request(world) for _ in range(5)]
    db.session.close()
    waiters = 100
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    def wait(request_id):
        with app.app_context():
            service.wait_for_change(request_id, Status.PENDING, 3, clock)

    threads = [threading.Thread(target=wait, args=(rids[i % 5],)) for i in range(waiters)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every waiter has done its one read and sleeps
    event.listen(Engine, "before_cursor_execute", count)
    try:
        time.sleep(1.0)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    for thread in threads:
        thread.join(10)
    queries = [s for s in statements if not s.startswith("PRAGMA data_version")]
    # Polling every 50 ms each, they issued 2,000 in that second; now the notifier's
    # shared check runs at most once, and SQLite's change counter ~20 times.
    assert len(queries) <= 5, queries
    assert len(statements) - len(queries) <= 30


@pytest.mark.postgres
def test_a_dropped_listen_connection_is_made_again_and_still_wakes(app, world):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    rid = new_request(world)
    hub = notifier.notifier_for(db.engine)
    with notifier.watch_request(rid) as watch:
        assert _wait_until(lambda: _listener_pids(), 5), "no LISTEN connection"
        connects = hub.listener_connects
        killed = _listener_pids()
        db.session.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE pid = ANY(:pids)"), {"pids": killed})
        db.session.commit()
        assert _wait_until(lambda: hub.listener_connects > connects, 5)
        assert _listener_pids() and not set(_listener_pids()) & set(killed)
        watch.wait(0)  # a reconnect may have woken it to re-read; start afresh
        thread, times = in_thread(app, deny(rid))
        assert watch.wait(2.0)  # by NOTIFY: the fallback check is 5 s away
        thread.join(5)
        assert not times["failures"]


def _listener_pids() -> list[int]:
    db.session.rollback()
    return list(db.session.scalars(text(
        "SELECT pid FROM pg_stat_activity WHERE application_name = :name "
        "AND datname = current_database() AND pid <> pg_backend_pid()"),
        {"name": notifier.LISTENER_NAME}))


def _wait_until(predicate, timeout: float) -> bool:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(0.05)
    return False
