"""Data for the session-log tests (Sessions page, timelines): two departments, their
people, devices, remote sessions started and ended through the services the agent API
calls, and client sessions opened by a one-time password. Times are NOW-based; the app's
clock stands at CLOCK_AT (a fixture's `app_config` gives it)."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from factories import NOW

from portal.domain import otp as otp_rules
from portal.extensions import db
from portal.models import ClientSession, OneTimePassword
from portal.services import accounts, agents, crypto, departments, devices, otp, otp_requests
from portal.services import requests as request_service
from portal.services.actors import CLI, Actor

CLOCK_AT = NOW + timedelta(hours=2)
DEVICE = "WIN-0859G9I39J0"
OTHER_DEVICE = "ubuntu-qa-03"
SALES_DEVICE = "WIN-SALES-01"


def build_world(make) -> SimpleNamespace:
    qa = make.department("QA Team")
    sales = make.department("Sales Team")
    w = SimpleNamespace(qa=qa, sales=sales, tokens={})
    for email, role, department in [
            ("admin@example.com", "admin", None),
            ("auditor@example.com", "auditor", qa),
            ("qa-admin@example.com", "department_admin", qa),
            ("approver@example.com", "approver", qa),
            ("tech@example.com", "technician", qa),
            ("tech2@example.com", "technician", qa),
            ("sales-auditor@example.com", "auditor", sales),
            ("sales-tech@example.com", "technician", sales)]:
        make.user(email, role, department)
    for name, department in [(DEVICE, qa), (OTHER_DEVICE, qa), (SALES_DEVICE, sales)]:
        device, token = devices.create_device(department=department, name=name, actor=CLI,
                                              now=NOW)
        w.tokens[name] = token
    db.session.commit()
    return w


def device(name):
    return devices.find_device(name)


def remote_session(technician: str, device_name: str, started, ended=None, run_as=None,
                   reason=None):
    """An approved request (no checks configured: approved by policy at once) whose
    session the device's agent started (and ended)."""
    tech = accounts.find_user(technician)
    req = request_service.create_session_request(
        technician=tech, device_name=device_name, run_as=run_as, reason=reason,
        actor=Actor.for_user(tech, "192.0.2.10"), now=started - timedelta(seconds=30),
        base_url="http://portal.test")
    agent = Actor(label=f"device:{device_name}", client_ip="198.51.100.4")
    session = agents.start_remote_session(device=device(device_name), request_id=req.id,
                                          actor=agent, now=started)
    if ended is not None:
        agents.end_remote_session(device=device(device_name), session_id=session.id,
                                  actor=agent, now=ended)
    db.session.commit()
    return req, session


def turn_on(department, **values) -> None:
    current = departments.settings_values(department.settings)
    departments.update_settings(department=department, values={**current, **values},
                                actor=CLI, now=NOW)
    db.session.commit()


def client_session_by_approval(department, device_name, *, username="jsmith",
                               email="j.smith@example.com", at=NOW, approver=None,
                               user_agent="Mozilla/5.0 (Approver's phone)"):
    """The whole OTP path: the device asks, an approver approves in the portal, the code
    (read back from its sealed copy, as a resend would) is typed at the login screen.
    Returns (access request id, client session, the code)."""
    turn_on(department, is_otp_allowed=True)
    dev = device(device_name)
    agent = Actor(label=f"device:{device_name}", client_ip="198.51.100.4")
    answer = otp_requests.request_otp(device=dev, username=username, email=email,
                                      actor=agent, now=at, base_url="http://portal.test")
    db.session.commit()
    approver = accounts.find_user(approver or "approver@example.com")
    otp_requests.decide_in_portal(user=approver, request_id=answer.request_id,
                                  decision="approve", actor=Actor.for_user(approver, "203.0.113.9"),
                                  now=at + timedelta(seconds=20), user_agent=user_agent)
    db.session.commit()
    code_row = db.session.scalars(
        db.select(OneTimePassword).where(OneTimePassword.access_request_id == answer.request_id)
    ).one()
    code = crypto.open_code(otp_rules.binding(dev.id, username, email), code_row.code_ciphertext)
    session = otp.verify_otp(device=dev, username=username, email=email, password=code,
                             actor=agent, now=at + timedelta(minutes=1))
    db.session.commit()
    return answer.request_id, session, code


def plain_client_session(device_name, username, email, started, ended=None):
    """A client session row as verify_otp writes it (for list tests that need many)."""
    dev = device(device_name)
    session = ClientSession(device_id=dev.id, department_id=dev.department_id,
                            username=username, email=email, started_at=started,
                            ended_at=ended)
    db.session.add(session)
    db.session.commit()
    return session
