"""The approval chain with real scheduler processes (`flask --app portal scheduler`), a
real SMTP server, and a restart in the middle — on SQLite and on PostgreSQL.

A running scheduler mails the approvers when the end user's prompt times out; it is then
killed (`kill -9`); while nothing runs, one request's escalation and another's fallback fall
due and a third request's whole deadline passes. Two schedulers start together (on
SQLite both run; on PostgreSQL one is elected): their start-up runs catch up, every step
is taken once — each email reaches the SMTP server exactly once — the deadlines fixed at
creation don't move, and the request past its deadline is timed out, never mailed.

"Escalate after" is 30 s at the least; rather than wait that long, the test moves one
request's escalation due time forward in the database, as if the time had passed.
"""
from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from scheduler_process import RUNNING, run_schedulers, scheduler_env
from sqlalchemy import func, select, update

from portal.extensions import db
from portal.models import AuditEvent, OutboxMessage, SessionRequest
from portal.services import accounts, departments
from portal.services import requests as service
from portal.services.actors import CLI

R1, R2, ONCALL = "first@example.com", "second@example.com", "on-call@example.com"
FALLBACK_SUBJECT = "Remote session request for {device}"
ESCALATION_SUBJECT = "Escalated: remote session request for {device}"


@pytest.fixture
def schedulers(app, smtp):
    yield from run_schedulers(scheduler_env(app, smtp.port))


@pytest.fixture
def qa(make):
    department = make.department("Night Shift")
    for n in range(3):
        device = make.device(department, f"NIGHT-{n}")
        device.logged_in_user = "alice"
    make.user("tech@example.com", "technician", department)
    values = {**departments.settings_values(department.settings),
              "is_confirmation_shown": True, "confirmation_timeout_seconds": 60,
              "is_email_authorization_required": True,
              "email_authorization_timeout_seconds": 180,
              "email_recipients": f"{R1}\n{R2}", "is_fallback_to_email": True,
              "escalation_recipients": f"{ONCALL}\n{R1}", "escalate_after_seconds": 30}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=utcnow())
    db.session.commit()
    return department


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def wait_until(predicate, timeout: float, what: str, *schedulers) -> None:
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            output = "\n---\n".join(s.output() for s in schedulers)
            pytest.fail(f"not within {timeout} s: {what}\n{output}")
        time.sleep(0.05)


def new_request(device: str, prompt_ends_in: float) -> int:
    """A request whose end-user prompt (60 s) ends `prompt_ends_in` seconds from now."""
    req = service.create_session_request(
        technician=accounts.find_user("tech@example.com"), device_name=device, actor=CLI,
        now=utcnow() - timedelta(seconds=60 - prompt_ends_in), base_url="http://portal.test")
    db.session.commit()
    assert (req.status, req.email_check) == ("pending", "waiting")
    return req.id


def fresh(request_id: int) -> SessionRequest:
    db.session.rollback()
    db.session.expire_all()
    return db.session.get(SessionRequest, request_id)


def events(action: str) -> Counter:
    db.session.rollback()
    return Counter(int(t) for t, in db.session.execute(
        select(AuditEvent.target_id).where(AuditEvent.action == action)))


def sent_count(request_id: int) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(OutboxMessage).where(
        OutboxMessage.request_id == request_id, OutboxMessage.status == "sent"))


def received(smtp) -> Counter:
    return Counter((tuple(rcpt), str(m["Subject"])) for rcpt, m in smtp.handler.messages)


def test_the_chain_survives_a_scheduler_kill_and_two_schedulers_at_start_up(
        app, qa, smtp, schedulers):
    first = schedulers()
    wait_until(lambda: first.said(RUNNING), 30, "the scheduler runs", first)

    # Running: the prompt ends unanswered, the approvers are mailed at once.
    a = new_request("NIGHT-0", prompt_ends_in=1)
    a_deadline = fresh(a).expires_at
    wait_until(lambda: received(smtp)[((R1,), "Remote session request for NIGHT-0")] == 1
               and received(smtp)[((R2,), "Remote session request for NIGHT-0")] == 1,
               15, "the fallback emails arrive", first)
    assert abs((fresh(a).fallback_mailed_at - fresh(a).end_user_deadline
                ).total_seconds()) < 1.5
    # Killed once their delivery is recorded: an email whose server said 250 before the
    # kill and whose outcome was not yet written is sent again, as SMTP cannot avoid
    # (see the README's Benchmark, "Outcomes written together"). The chain's own steps
    # are what this test holds to exactly once.
    wait_until(lambda: sent_count(a) == 2, 15, "the fallback emails are recorded", first)

    # Killed. While nothing runs: A's escalation falls due, B's prompt ends unanswered,
    # C's whole deadline passes.
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    db.session.execute(update(SessionRequest).where(SessionRequest.id == a)
                       .values(chain_due_at=utcnow()))
    db.session.commit()
    b = new_request("NIGHT-1", prompt_ends_in=0.5)
    c = new_request("NIGHT-2", prompt_ends_in=0.5)
    db.session.execute(update(SessionRequest).where(SessionRequest.id == c).values(
        expires_at=utcnow() + timedelta(seconds=1),
        email_deadline=utcnow() + timedelta(seconds=1)))
    db.session.commit()
    b_deadline = fresh(b).expires_at
    time.sleep(1.5)
    assert fresh(b).email_check == "waiting" and fresh(c).status == "pending"

    # Two schedulers at once: on SQLite both run their start-up sweeps; on PostgreSQL
    # one is elected and the other stands by.
    second, third = schedulers(), schedulers()
    wait_until(lambda: second.said(RUNNING) or third.said(RUNNING), 30,
               "a scheduler runs again", second, third)
    wait_until(lambda: received(smtp)[((ONCALL,), "Escalated: remote session request for "
                                                  "NIGHT-0")] == 1
               and received(smtp)[((R1,), "Remote session request for NIGHT-1")] == 1
               and received(smtp)[((R2,), "Remote session request for NIGHT-1")] == 1
               and fresh(c).status == "timed_out",
               15, "the start-up runs catch up", second, third)
    time.sleep(1.5)  # room for a second mailing, were there one

    mail = received(smtp)
    assert all(n == 1 for n in mail.values()), mail
    assert sorted(mail) == sorted([
        ((R1,), "Remote session request for NIGHT-0"),
        ((R2,), "Remote session request for NIGHT-0"),
        ((ONCALL,), "Escalated: remote session request for NIGHT-0"),  # R1 not twice
        ((R1,), "Remote session request for NIGHT-1"),
        ((R2,), "Remote session request for NIGHT-1"),
    ])
    assert events("request.fallback_mailed") == Counter([a, b])
    assert events("request.escalated") == Counter([a])
    assert events("request.timed_out") == Counter([c])
    assert (fresh(a).expires_at, fresh(b).expires_at) == (a_deadline, b_deadline)
    assert fresh(c).email_check == "waiting"  # never asked
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(SessionRequest).where(
        SessionRequest.chain_due_at.is_not(None))) == 1  # B's escalation, still to come
