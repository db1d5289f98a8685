"""Races on PostgreSQL with real threads: two people pressing "End session" at once
record one end request (the other gets 409), and a press racing the agent's own end
leaves one consistent outcome — "Ended by" the presser only if the press came first."""
from __future__ import annotations

import os
import threading

import pytest
from factories import NOW
from sqlalchemy import func, select

from portal.domain.errors import ConflictError
from portal.extensions import db
from portal.models import AuditEvent, RemoteSession
from portal.services import accounts, agents, devices, session_control
from portal.services import requests as service
from portal.services.actors import CLI

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
        reason="races need PostgreSQL (set PORTAL_TEST_DATABASE_URI)"),
]

DEVICE = "WIN-0859G9I39J0"
ROUNDS = 10


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.device(department, DEVICE)
    make.user("tech@example.com", "technician", department)
    make.user("ann@example.com", "approver", department)
    make.user("head@example.com", "department_admin", department)
    db.session.commit()
    return department


def running_session() -> int:
    req = service.create_session_request(
        technician=accounts.find_user("tech@example.com"), device_name=DEVICE, actor=CLI,
        now=NOW, base_url="http://portal.test")
    session = agents.start_remote_session(device=devices.find_device(DEVICE),
                                          request_id=req.id, actor=CLI, now=NOW)
    db.session.commit()
    return session.id


def together(app, *acts) -> list:
    barrier = threading.Barrier(len(acts))
    results: list = [None] * len(acts)

    def worker(index, act):
        with app.app_context():
            try:
                barrier.wait(timeout=10)
                act()
                db.session.commit()
                results[index] = "won"
            except ConflictError:
                db.session.rollback()
                results[index] = 409
            except Exception as exc:  # noqa: BLE001 - reported by the assertions
                db.session.rollback()
                results[index] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i, act)) for i, act in enumerate(acts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a contender hung"
    return results


def press(department_id, email, session_id):
    def act():
        session_control.request_end(user=accounts.find_user(email),
                                    department_id=department_id, session_id=session_id,
                                    reason=f"by {email}", actor=CLI, now=NOW)
    return act


def agent_end(session_id):
    def act():
        agents.end_remote_session(device=devices.find_device(DEVICE), session_id=session_id,
                                  actor=CLI, now=NOW)
    return act


def test_two_presses_at_once_record_one_end_request(app, qa):
    for _ in range(ROUNDS):
        session_id = running_session()
        results = together(app, press(qa.id, "ann@example.com", session_id),
                           press(qa.id, "head@example.com", session_id))
        assert sorted(results, key=str) == [409, "won"], results
        db.session.expire_all()
        row = db.session.get(RemoteSession, session_id)
        winner = ["ann@example.com", "head@example.com"][results.index("won")]
        assert (row.end_requested_by, row.end_reason) == (winner, f"by {winner}")
        assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "session.end_requested",
            AuditEvent.details["remote_session_id"].as_integer() == session_id)) == 1


def test_a_press_racing_the_agents_own_end_is_consistent(app, qa):
    for _ in range(ROUNDS):
        session_id = running_session()
        pressed, ended = together(app, press(qa.id, "ann@example.com", session_id),
                                  agent_end(session_id))
        assert ended == "won", ended
        db.session.expire_all()
        row = db.session.get(RemoteSession, session_id)
        assert row.ended_at is not None
        if pressed == "won":  # the press came first: the agent's end names the presser
            assert row.ended_by == "ann@example.com"
        else:
            assert (pressed, row.ended_by, row.end_requested_at) == (409, "device", None)
