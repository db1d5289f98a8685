"""Set-up shared by the API tests: a department with settings, technicians with user
tokens, devices with device tokens, and a way to move a request's deadlines into the past
(the API reads the real clock; no scheduler runs in tests).

A plain module of helpers the API tests import by name, as they import `NOW` from
factories.py."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from sqlalchemy import update

from portal.extensions import db
from portal.models import SessionRequest
from portal.services import accounts, agents, departments, devices
from portal.services.actors import CLI, Actor

RECIPIENTS = ["approver@example.com", "second@example.com"]
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
REQUEST_KEYS = {"id", "status", "device", "technician", "run_as", "reason", "created_at",
                "expires_at", "decided_at", "seconds_left", "checks", "decided_by",
                "decision_reason", "outcome_message", "approvals", "match_number"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def parse_iso(value: str) -> datetime:
    assert ISO_MS.match(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def build_world(make) -> SimpleNamespace:
    """QA Team (confirmation and email authorization off) with two technicians, an
    approver, two devices; Support with one device. Tokens for all of them."""
    qa, support = make.department("QA Team"), make.department("Support")
    w = SimpleNamespace(qa=qa, support=support)
    w.tech = make.user("tech@example.com", "technician", qa)
    w.tech2 = make.user("tech2@example.com", "technician", qa)
    w.approver = make.user("approver@example.com", "approver", qa)
    w.tech_token = accounts.create_user_token(user=w.tech, actor=CLI, now=utcnow())
    w.tech2_token = accounts.create_user_token(user=w.tech2, actor=CLI, now=utcnow())
    w.device, w.device_token = devices.create_device(
        department=qa, name="WIN-0859G9I39J0", os="Windows 11", actor=CLI, now=utcnow())
    w.device_b, w.device_b_token = devices.create_device(
        department=qa, name="WIN-B", os="Windows 11", actor=CLI, now=utcnow())
    w.foreign, w.foreign_token = devices.create_device(
        department=support, name="SUPPORT-PC-1", actor=CLI, now=utcnow())
    db.session.commit()
    return w


def configure(department, **changes) -> None:
    values = {**departments.settings_values(department.settings), **changes}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=utcnow())
    db.session.commit()


def with_prompt(w) -> None:
    """Session confirmation on (60 s), somebody logged in at both QA devices."""
    configure(w.qa, is_confirmation_shown=True)
    for device in (w.device, w.device_b):
        agents.update_state(device=device, locked=False, logged_in_user="alice",
                            actor=Actor(label=f"device:{device.name}"), now=utcnow())
    db.session.commit()


def with_email(w, **changes) -> None:
    configure(w.qa, is_email_authorization_required=True,
              email_recipients=", ".join(RECIPIENTS), **changes)


def age(request_id: int, seconds: float) -> None:
    """Move the request's creation and every deadline `seconds` into the past."""
    req = db.session.get(SessionRequest, request_id)
    shift = timedelta(seconds=seconds)
    values = {"created_at": req.created_at - shift, "expires_at": req.expires_at - shift}
    for column in ("end_user_deadline", "email_deadline", "chain_due_at"):
        if getattr(req, column) is not None:
            values[column] = getattr(req, column) - shift
    db.session.execute(update(SessionRequest).where(SessionRequest.id == request_id)
                       .values(**values).execution_options(synchronize_session=False))
    db.session.commit()
    db.session.expire_all()


def assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert set(error) - {"fields"} == {"code", "message"}  # fields: a validation error's
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error
