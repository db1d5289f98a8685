"""The approval chain's job in the scheduler (portal/jobs.py `_sweep` → chain steps): it
wakes at a step's due time like at a deadline, a start-up run catches up what fell due
while nothing ran (but never mails a request past its deadline), and on PostgreSQL
concurrent jobs — and a job racing a decision — take each step once and never mail after a
decision. Real threads, the real clock; the database is polled, never slept on."""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta

import pytest
from factories import NOW
from sqlalchemy import func, select

from portal import jobs
from portal.clock import SystemClock
from portal.extensions import db
from portal.models import AuditEvent, OutboxMessage, SessionRequest
from portal.services import accounts, chain, decisions, departments
from portal.services import requests as service
from portal.services.actors import CLI, Actor

utcnow = SystemClock()
DEVICE = "WIN-0859G9I39J0"
R1, ONCALL = "approver@example.com", "on-call@example.com"
BASE = "http://portal.test"


@pytest.fixture
def qa(app, make):
    department = make.department("QA Team")
    device = make.device(department, DEVICE)
    device.logged_in_user = "alice"
    make.user("tech@example.com", "technician", department)
    make.user(R1, "approver", department)
    values = {**departments.settings_values(department.settings),
              "is_confirmation_shown": True, "is_email_authorization_required": True,
              "email_recipients": R1, "is_fallback_to_email": True,
              "escalation_recipients": ONCALL, "escalate_after_seconds": 30}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()
    return department


def new_request(created_at: datetime) -> int:
    req = service.create_session_request(
        technician=accounts.find_user("tech@example.com"), device_name=DEVICE, actor=CLI,
        now=created_at, base_url=BASE)
    db.session.commit()
    assert (req.status, req.email_check) == ("pending", "waiting")
    return req.id


def row(request_id: int) -> SessionRequest:
    db.session.rollback()
    db.session.expire_all()
    return db.session.get(SessionRequest, request_id)


def count(action: str, request_id: int) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count(AuditEvent.seq)).where(
        AuditEvent.action == action, AuditEvent.target_id == str(request_id)))


def recipients(request_id: int) -> list[str]:
    db.session.rollback()
    return sorted(db.session.scalars(select(OutboxMessage.recipient).where(
        OutboxMessage.request_id == request_id)))


def wait_until(predicate, timeout: float) -> None:
    give_up = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < give_up, "not in time"
        time.sleep(0.02)


def test_the_scheduler_mails_the_approvers_at_the_prompts_deadline(app, qa, start_scheduler,
                                                                   monkeypatch):
    monkeypatch.setattr(jobs, "EXPIRY_INTERVAL_SECONDS", 30)  # the periodic run: too late
    # Created 59 s ago: the prompt's 60 s end in about a second.
    request_id = new_request(utcnow() - timedelta(seconds=59))
    due = row(request_id).end_user_deadline
    start_scheduler()
    wait_until(lambda: row(request_id).email_check == "pending", timeout=5)
    req = row(request_id)
    assert due <= req.fallback_mailed_at <= due + timedelta(seconds=2)  # a busy machine
    assert req.expires_at == due + timedelta(seconds=180)  # fixed at creation
    assert recipients(request_id) == [R1]
    assert count("request.fallback_mailed", request_id) == 1


def test_a_start_up_run_catches_up_on_steps_missed_while_nothing_ran(app, qa,
                                                                     start_scheduler):
    # Nothing ran for a while: one request's prompt ended 100 s ago (still pending until
    # its fixed deadline, 80 s from now), another's whole deadline passed.
    live = new_request(utcnow() - timedelta(seconds=160))
    gone = new_request(utcnow() - timedelta(seconds=300))
    start_scheduler()
    wait_until(lambda: row(gone).status == "timed_out" and row(live).chain_due_at
               != row(live).end_user_deadline, timeout=5)
    # The fallback was mailed at once, and the escalation (30 s after it) follows.
    assert recipients(live) == [R1] and count("request.fallback_mailed", live) == 1
    assert recipients(gone) == [] and count("request.fallback_mailed", gone) == 0
    assert row(live).expires_at - row(live).created_at == timedelta(seconds=240)


# --- PostgreSQL: concurrent jobs, a job racing a decision ----------------------------

on_postgres = pytest.mark.skipif(
    not os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
    reason="races need PostgreSQL (set PORTAL_TEST_DATABASE_URI)")


def together(app, *calls) -> list:
    barrier, results = threading.Barrier(len(calls)), []

    def run(call):
        with app.app_context():
            try:
                barrier.wait(timeout=10)
                results.append(call())
                db.session.commit()
            except Exception as exc:  # noqa: BLE001 - reported by the assertions
                db.session.rollback()
                results.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    return results


@pytest.mark.postgres
@on_postgres
def test_concurrent_jobs_take_each_step_once(app, qa):
    ids = [new_request(utcnow() - timedelta(seconds=61)) for _ in range(12)]
    now = utcnow()
    results = together(app, *[lambda: chain.take_due_steps(now, base_url=BASE)] * 3)
    assert not [r for r in results if isinstance(r, Exception)], results
    taken = sorted(i for steps, _more in results for i, _ in steps)
    assert taken == sorted(ids)
    for request_id in ids:
        assert recipients(request_id) == [R1]
        assert count("request.fallback_mailed", request_id) == 1


@pytest.mark.postgres
@on_postgres
@pytest.mark.parametrize("rounds", range(5))
def test_an_escalation_racing_a_decision_never_mails_after_it(app, qa, rounds):
    values = {**departments.settings_values(qa.settings), "is_fallback_to_email": False}
    departments.update_settings(department=qa, values=values, actor=CLI, now=NOW)
    db.session.commit()
    req = service.create_session_request(
        technician=accounts.find_user("tech@example.com"), device_name=DEVICE, actor=CLI,
        now=utcnow() - timedelta(seconds=31), base_url=BASE)
    db.session.commit()
    request_id, approver = req.id, accounts.find_user(R1)
    now = utcnow()

    def decide():
        return decisions.decide_in_portal(user=approver, request_id=request_id,
                                          decision="deny", actor=Actor.for_user(
                                              approver, "192.0.2.7"), now=now)

    results = together(app, lambda: chain.take_due_steps(now, base_url=BASE), decide)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert row(request_id).status == "denied"
    db.session.rollback()
    escalation_mail = db.session.scalars(select(OutboxMessage.status).where(
        OutboxMessage.request_id == request_id, OutboxMessage.recipient == ONCALL)).all()
    # Either the decision came first (nothing escalated), or the escalation did and the
    # decision then cancelled its mail: never an escalation email left to send.
    assert escalation_mail in ([], ["cancelled"])
    assert count("request.escalated", request_id) == len(escalation_mail)
