"""The job process: the start-up sweep catches what expired while nothing ran, a running
scheduler times requests out on time, one scheduler is elected on PostgreSQL, and with no
scheduler at all a late decision is still refused (security.md 9, 11; design.md
"Production shape"). Real threads, the real clock; the database is polled, never slept on."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from factories import NOW, PASSWORD, sealed_trail_check
from sqlalchemy import event, func, select, update

from portal import jobs
from portal.clock import SystemClock
from portal.extensions import db
from portal.election import SchedulerLock
from portal.models import AuditEvent, Device, OutboxMessage, SessionRequest
from portal.services import accounts, departments
from portal.services import mail as outbox
from portal.services import requests as service
from portal.services.actors import CLI

utcnow = SystemClock()

DEVICE = "WIN-0859G9I39J0"
APPROVER = "approver@example.com"


@pytest.fixture
def qa(app, make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user("tech@example.com", "technician", department)
    make.user(APPROVER, "approver", department)
    values = {**departments.settings_values(department.settings),
              "is_confirmation_shown": True, "is_shown_when_locked": True,
              "is_email_authorization_required": True, "email_recipients": APPROVER}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()
    return department


@pytest.fixture
def device_token(qa):
    token = accounts.create_device_token(
        device=db.session.scalar(select(Device).where(Device.name == DEVICE)), actor=CLI,
        now=NOW)
    db.session.commit()
    return token


def new_request(created_at):
    req = service.create_session_request(
        technician=accounts.find_user("tech@example.com"), device_name=DEVICE, actor=CLI,
        now=created_at, base_url="http://portal.test")
    db.session.commit()
    assert req.status == "pending"
    return req.id


def statuses(ids):
    db.session.rollback()  # a fresh look: nothing cached, no transaction kept open
    rows = db.session.execute(select(SessionRequest.id, SessionRequest.status)
                              .where(SessionRequest.id.in_(ids)))
    return {row.id: row.status for row in rows}


def wait_until(predicate, timeout):
    """Poll until `predicate()` is true; the elapsed seconds, or fail after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not true within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def timed_out_events(request_id):
    return db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "request.timed_out", AuditEvent.target_id == str(request_id)))


def set_deadline(request_id, deadline):
    db.session.execute(update(SessionRequest).where(SessionRequest.id == request_id).values(
        expires_at=deadline, end_user_deadline=deadline, email_deadline=deadline))
    db.session.commit()


def test_start_up_sweep_expires_requests_that_went_overdue_while_down(qa, start_scheduler):
    overdue = [new_request(utcnow() - timedelta(hours=1, minutes=m)) for m in range(3)]
    waiting = new_request(utcnow())
    assert set(statuses(overdue).values()) == {"pending"}  # nothing ran while "down"

    start_scheduler()
    wait_until(lambda: set(statuses(overdue).values()) == {"timed_out"}, timeout=2)
    assert statuses([waiting]) == {waiting: "pending"}
    assert [timed_out_events(i) for i in overdue] == [1, 1, 1]
    for request_id in overdue:  # its mail is not sent any more, its links are gone
        messages = db.session.scalars(select(OutboxMessage).where(
            OutboxMessage.request_id == request_id))
        assert {m.status for m in messages} == {"cancelled"}
    assert sealed_trail_check()[1] is None


def test_running_scheduler_times_a_request_out_at_its_deadline(qa, start_scheduler):
    request_id = new_request(utcnow())
    start_scheduler()
    deadline = utcnow() + timedelta(seconds=1)
    set_deadline(request_id, deadline)
    # Polling from now: the deadline is ~1 s away, the transition due within 1.5 s of it.
    wait_until(lambda: statuses([request_id])[request_id] == "timed_out", timeout=2.5)
    observed = utcnow()
    assert observed <= deadline + timedelta(seconds=1.5)
    req = db.session.get(SessionRequest, request_id)
    assert req.decided_at >= deadline  # never before the deadline
    assert req.decided_at <= deadline + timedelta(seconds=1.5)
    assert (req.decided_by, timed_out_events(request_id)) == (None, 1)


@pytest.mark.postgres
def test_only_one_scheduler_holds_the_lock_on_postgresql(app, runner):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the advisory lock exists on PostgreSQL only")
    first, second = SchedulerLock(app), SchedulerLock(app)
    try:
        assert first.acquire() is True
        assert second.acquire() is False
        result = runner.invoke(args=["scheduler", "--no-wait"])
        assert result.exit_code != 0 and "Another scheduler is running." in result.output
        first.release()
        assert second.acquire() is True
        assert SchedulerLock(app).acquire() is False
    finally:
        first.release()
        second.release()


def test_sqlite_has_nothing_to_elect(app):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    first, second = SchedulerLock(app), SchedulerLock(app)
    assert first.acquire() is True and second.acquire() is True
    first.release()
    second.release()


def test_late_link_decision_without_a_scheduler_is_410(app, qa):
    request_id = new_request(utcnow())
    link = outbox.approval_links_in(db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.request_id == request_id)).one())[0]
    set_deadline(request_id, utcnow() - timedelta(seconds=1))
    assert statuses([request_id]) == {request_id: "pending"}  # no job has run

    client = app.test_client()
    path = link.removeprefix("http://portal.test")
    assert client.post("/login", data={"email": APPROVER, "password": PASSWORD,
                                       "next": path}).headers["Location"] == path
    response = client.post(path, data={"decision": "allow"})
    assert response.status_code == 410
    assert "<h2>Timed out</h2>" in response.get_data(as_text=True)
    assert statuses([request_id]) == {request_id: "timed_out"}
    req = db.session.get(SessionRequest, request_id)
    assert (req.decided_by, req.email_check) == (None, "pending")
    assert timed_out_events(request_id) == 1


def test_late_prompt_answer_through_the_api_is_410(app, client, device_token):
    technician = accounts.create_user_token(user=accounts.find_user("tech@example.com"),
                                            actor=CLI, now=NOW)
    db.session.commit()
    request_id = new_request(utcnow())
    set_deadline(request_id, utcnow() - timedelta(seconds=1))
    as_technician = {"Authorization": f"Bearer {technician}"}
    seen = client.get(f"/api/v1/session-requests/{request_id}", headers=as_technician)
    assert seen.get_json()["status"] == "timed_out"  # reads timed out before any job
    assert seen.get_json()["outcome_message"] == "The Session Confirmation request has timed out."

    response = client.post(f"/api/v1/agent/prompts/{request_id}", json={"decision": "accept"},
                           headers={"Authorization": f"Bearer {device_token}"})
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "expired"
    assert statuses([request_id]) == {request_id: "timed_out"}
    after = client.get(f"/api/v1/session-requests/{request_id}", headers=as_technician)
    assert (after.get_json()["status"], after.get_json()["decided_by"]) == ("timed_out", None)
    assert after.get_json()["checks"] == {"end_user": "timed_out", "email": "timed_out"}
    assert timed_out_events(request_id) == 1


# --- expiry at scale, failover ------------------------------------------------------


def test_a_sweep_times_out_batch_after_batch_once_each(app, qa, monkeypatch):
    monkeypatch.setattr(jobs, "EXPIRY_BATCH", 3)
    monkeypatch.setattr(jobs, "EXPIRY_BATCH_POSTGRESQL", 3)
    overdue = [new_request(utcnow() - timedelta(hours=2)) for _ in range(8)]
    waiting = new_request(utcnow())
    assert sorted(jobs.expire_requests(app)) == sorted(overdue)  # 3 + 3 + 2, one sweep
    assert set(statuses(overdue).values()) == {"timed_out"}
    assert statuses([waiting]) == {waiting: "pending"}
    assert [timed_out_events(i) for i in overdue] == [1] * 8
    assert jobs.expire_requests(app) == []  # a second sweep finds nothing
    assert sealed_trail_check()[1] is None


def test_a_sweep_with_nothing_due_only_reads_the_requests(app, qa):
    new_request(utcnow())
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement.split(None, 3)[:3])

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert jobs.expire_requests(app) == []
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    writes = [s for s in seen if s[0] in ("UPDATE", "INSERT", "DELETE")]
    assert not [s for s in writes if "session_requests" in s or "otp_access_requests" in s]


def test_the_expiry_job_wakes_at_the_next_deadline(app, qa, start_scheduler, monkeypatch):
    monkeypatch.setattr(jobs, "EXPIRY_INTERVAL_SECONDS", 30)  # the periodic run: too late
    request_id = new_request(utcnow())
    set_deadline(request_id, utcnow() + timedelta(seconds=1))
    start_scheduler()  # its start-up sweep learns the deadline
    wait_until(lambda: statuses([request_id])[request_id] == "timed_out", timeout=3)
    req = db.session.get(SessionRequest, request_id)
    assert req.expires_at <= req.decided_at <= req.expires_at + timedelta(seconds=0.5)
    assert timed_out_events(request_id) == 1


def test_taking_over_makes_a_dead_schedulers_claims_due_at_once(app, qa):
    request_id = new_request(utcnow())
    now = utcnow()
    db.session.execute(update(OutboxMessage).where(OutboxMessage.request_id == request_id)
                       .values(status="sending", next_attempt_at=now + timedelta(minutes=2)))
    db.session.commit()
    assert jobs.take_over(app) == 1
    db.session.expire_all()
    message = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.request_id == request_id)).one()
    assert message.status == "sending" and message.next_attempt_at <= utcnow()
    assert jobs.take_over(app) == 0


@pytest.mark.postgres
def test_a_standby_waits_on_the_lock_and_gets_it_when_freed(app):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the advisory lock exists on PostgreSQL only")
    holder, standby = SchedulerLock(app), SchedulerLock(app)
    got: list[float] = []
    try:
        assert holder.acquire() is True
        thread = threading.Thread(target=lambda: got.append(
            standby.acquire(wait=True) and time.monotonic()))
        thread.start()
        time.sleep(1.5)  # longer than one slice of the wait
        assert got == [] and holder.is_held()
        freed = time.monotonic()
        holder.release()
        thread.join(timeout=5)
        assert got and got[0] - freed < 0.5  # not the next slice: the moment it is free
        assert standby.is_elected and standby.is_held()
        assert SchedulerLock(app).acquire() is False
    finally:
        holder.release()
        standby.release()


@pytest.mark.postgres
def test_concurrent_batched_sweeps_time_each_request_out_once(app, qa, monkeypatch):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("concurrent sweeps need PostgreSQL")
    monkeypatch.setattr(jobs, "EXPIRY_BATCH", 7)
    monkeypatch.setattr(jobs, "EXPIRY_BATCH_POSTGRESQL", 7)
    overdue = [new_request(utcnow() - timedelta(hours=2)) for _ in range(40)]
    barrier, swept = threading.Barrier(3), []

    def sweep():
        barrier.wait(timeout=10)
        swept.append(jobs.expire_requests(app))

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(i for found in swept for i in found) == sorted(overdue)
    assert [timed_out_events(i) for i in overdue] == [1] * 40
    assert sealed_trail_check()[1] is None


def test_a_shutdown_while_an_expiry_run_ends_does_not_hang(app, monkeypatch):
    """APScheduler's shutdown holds its job stores' lock while it waits for running jobs;
    the expiry run's "bring the next run forward" must not reach for that lock from the
    run's own thread (it did, and a shutdown at the wrong moment waited forever)."""
    started, release = threading.Event(), threading.Event()

    def a_slow_expiry_run(app):
        started.set()
        release.wait(5)
        return datetime.now(timezone.utc) + timedelta(seconds=0.1)  # bring it forward

    monkeypatch.setattr(jobs, "_sweep", a_slow_expiry_run)
    scheduler = jobs.build_scheduler(app)
    scheduler.start()
    assert started.wait(5)
    stopping = threading.Thread(target=scheduler.shutdown, kwargs={"wait": True},
                                daemon=True)
    stopping.start()
    time.sleep(0.3)  # the shutdown now holds the lock and waits for the run
    release.set()
    stopping.join(10)
    assert not stopping.is_alive(), "the scheduler's shutdown hung"


# --- sealing the audit trail ---------------------------------------------------------


def test_the_scheduler_seals_the_audit_trail_at_least_every_second(app):
    """Built, not started: the sealing job is there, on an interval of at most 1 s."""
    scheduler = jobs.build_scheduler(app)
    job = scheduler.get_job("seal_audit")
    assert job is not None and job.func is jobs.seal_audit and job.args == (app,)
    assert isinstance(job.trigger, IntervalTrigger)
    assert timedelta(0) < job.trigger.interval <= timedelta(seconds=1)


def unsealed_events() -> int:
    db.session.rollback()  # a fresh look, as statuses() does
    return db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.chain_index.is_(None)))


def test_an_event_committed_while_the_scheduler_runs_is_sealed_by_its_interval_job(
        qa, start_scheduler):
    """How soon is the interval's (the test above); here, that the running scheduler
    does it — no timing bound, which a busy machine would make flaky."""
    assert unsealed_events() > 0  # qa's set-up events, committed while nothing ran
    start_scheduler()
    wait_until(lambda: unsealed_events() == 0, timeout=10)  # the start-up run
    new_request(utcnow())  # events committed after that run: only the interval seals them
    wait_until(lambda: unsealed_events() == 0, timeout=10)
    assert sealed_trail_check()[1] is None
