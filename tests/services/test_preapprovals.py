"""Pre-approval on the data (portal/services/preapprovals.py, decisions.py, requests.py):
an approving Allow grants the window, later requests of that technician to that device
inside it are approved at once (any run_as) after the cool-down and a required reason,
revoking, expiry and a report end it, and lowering the setting cuts nothing."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from factories import NOW
from sqlalchemy import select

from portal import unit_of_work
from portal.domain.errors import (ConflictError, ForbiddenError, InvalidInputError,
                                  ReasonRequiredError, ReportedError)
from portal.extensions import db
from portal.models import AuditEvent, PreApproval
from portal.services import decisions, departments, preapprovals
from portal.services import requests as service
from portal.services.actors import CLI, Actor

ANN = "ann@example.com"
REASON = "Ticket INC-100042"
UNTIL_3H = "pre-approved by ann@example.com until 2026-11-22 13:15 UTC"


@pytest.fixture
def w(make):
    qa = make.department("QA Team")
    w = SimpleNamespace(
        qa=qa, tech=make.user("tech@example.com", "technician", qa),
        tech2=make.user("tech2@example.com", "technician", qa),
        ann=make.user(ANN, "approver", qa),
        admin=make.user("head@example.com", "department_admin", qa),
        device=make.device(qa, "WIN-0859G9I39J0"), other=make.device(qa, "WIN-OTHER"))
    configure(qa)
    return w


def configure(department, **changes):
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True, "email_recipients": ANN,
              "preapproval_max_hours": 8, **changes}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()


def create(w, now=NOW, tech=None, device=None, **kwargs):
    tech = tech or w.tech
    kwargs.setdefault("reason", REASON)
    req = service.create_session_request(
        technician=tech, device_name=(device or w.device).name,
        actor=Actor.for_user(tech, "192.0.2.10"), now=now, base_url="http://portal.test",
        **kwargs)
    db.session.commit()
    return req


def allow(w, req, hours=None, now=NOW, decision="allow"):
    decisions.decide_in_portal(user=w.ann, request_id=req.id, decision=decision,
                               actor=Actor.for_user(w.ann, "192.0.2.7"), now=now,
                               preapproval_hours=hours)
    db.session.commit()
    return req


def refused(call):
    with pytest.raises(Exception) as caught:
        call()
    unit_of_work.finish(succeeded=False)
    return caught.value


def windows():
    db.session.expire_all()
    return list(db.session.scalars(select(PreApproval).order_by(PreApproval.id)))


def actions(name):
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == name)
                                   .order_by(AuditEvent.seq)))


def test_an_allow_with_a_window_pre_approves_the_next_requests_at_once(w):
    first = allow(w, create(w), hours="3")
    assert first.status == "approved" and first.decided_by == ANN
    [window] = windows()
    assert (window.technician_id, window.device_id, window.granted_by, window.expires_at) == (
        w.tech.id, w.device.id, ANN, NOW + timedelta(hours=3))
    [granted] = actions("preapproval.granted")
    assert (granted.actor, granted.target_id, granted.details["hours"]) == (
        ANN, str(first.id), 3)

    later = create(w, now=NOW + timedelta(hours=2, minutes=59), run_as="Administrator")
    assert (later.status, later.decided_by, later.decision_reason) == (
        "approved", "pre_approval", UNTIL_3H)
    assert later.email_check == "skipped"
    # Only that technician, only that device, only inside the window.
    assert create(w, tech=w.tech2, now=NOW + timedelta(hours=1)).status == "pending"
    assert create(w, device=w.other, now=NOW + timedelta(hours=1)).status == "pending"
    assert create(w, now=NOW + timedelta(hours=3)).status == "pending"


@pytest.mark.parametrize("hours", [None, ""])
def test_an_allow_without_a_window_grants_none(w, hours):
    allow(w, create(w), hours=hours)
    assert windows() == [] and actions("preapproval.granted") == []
    assert create(w, now=NOW + timedelta(minutes=1)).status == "pending"


@pytest.mark.parametrize("changes, hours, message", [
    ({}, "9", "Pick a whole number of hours from 1 to 8, or none."),
    ({}, "0", "Pick a whole number of hours from 1 to 8, or none."),
    ({}, "soon", "Pick a whole number of hours from 1 to 8, or none."),
    ({"preapproval_max_hours": 0}, "1", "Pre-approval is not offered for this request."),
])
def test_a_window_not_offered_is_422_on_its_field_and_nothing_changes(w, changes, hours,
                                                                     message):
    configure(w.qa, **changes)
    req = create(w)
    error = refused(lambda: allow(w, req, hours=hours))
    assert isinstance(error, InvalidInputError)
    assert error.field_errors == {"preapproval_hours": [message]}
    db.session.expire_all()
    assert req.status == "pending" and windows() == []


def test_with_two_approvals_required_no_window_is_offered(w, make):
    bob = make.user("bob@example.com", "approver", w.qa)
    configure(w.qa, email_recipients=f"{ANN}\nbob@example.com", approvals_required=2)
    req = create(w)
    assert preapprovals.offered_for(req) == ()
    error = refused(lambda: allow(w, req, hours="1"))
    assert isinstance(error, InvalidInputError) and windows() == []
    assert bob  # the second recipient exists


def test_a_deny_ignores_the_window(w):
    req = allow(w, create(w), hours="2", decision="deny")
    assert req.status == "denied" and windows() == []


def test_the_cool_down_and_a_required_reason_come_before_a_pre_approval(w):
    allow(w, create(w), hours="8")
    configure(w.qa, is_reason_required=True)
    error = refused(lambda: create(w, now=NOW + timedelta(minutes=5), reason="fix"))
    assert isinstance(error, ReasonRequiredError)
    assert create(w, now=NOW + timedelta(minutes=6)).decided_by == "pre_approval"


def test_a_report_revokes_that_technicians_windows_on_that_device_and_its_cool_down_wins(w):
    first, second = create(w), create(w)  # both pending: no window yet
    allow(w, first, hours="8")
    allow(w, create(w, device=w.other), hours="8")
    allow(w, create(w, tech=w.tech2), hours="8")
    decisions.decide_in_portal(user=w.ann, request_id=second.id, decision="report",
                               actor=Actor.for_user(w.ann, "192.0.2.7"),
                               now=NOW + timedelta(minutes=1))
    db.session.commit()
    live = {(p.technician_id, p.device_id) for p in windows() if p.revoked_at is None}
    assert live == {(w.tech.id, w.other.id), (w.tech2.id, w.device.id)}
    [revoked] = [p for p in windows() if p.revoked_at is not None]
    assert (revoked.technician_id, revoked.device_id, revoked.revoked_by) == (
        w.tech.id, w.device.id, "report")
    [event] = actions("preapproval.revoked")
    assert (event.details["revoked_by"], event.details["reported_by"]) == ("report", ANN)
    # The cool-down refuses (429 first); after it, the request asks again.
    error = refused(lambda: create(w, now=NOW + timedelta(minutes=5)))
    assert isinstance(error, ReportedError)
    assert create(w, now=NOW + timedelta(hours=1)).status == "pending"


def test_the_cool_down_wins_over_a_window_granted_after_the_report(w):
    reported, later = create(w), create(w)
    decisions.decide_in_portal(user=w.ann, request_id=reported.id, decision="report",
                               actor=CLI, now=NOW + timedelta(seconds=1))
    db.session.commit()
    allow(w, later, hours="8", now=NOW + timedelta(seconds=2))  # a window after all
    assert [p.revoked_at for p in windows()] == [None]
    error = refused(lambda: create(w, now=NOW + timedelta(minutes=1)))
    assert isinstance(error, ReportedError)  # 429, not the pre-approval
    assert create(w, now=NOW + timedelta(minutes=31)).decided_by == "pre_approval"


def test_revoking_asks_again_and_a_second_revoke_is_409(w):
    allow(w, create(w), hours="4")
    [window] = windows()
    refused_user = refused(lambda: preapprovals.revoke(
        user=w.ann, device=w.device, preapproval_id=window.id, actor=CLI, now=NOW))
    assert isinstance(refused_user, ForbiddenError)  # approvers don't revoke
    preapprovals.revoke(user=w.admin, device=w.device, preapproval_id=window.id,
                        actor=Actor.for_user(w.admin, "192.0.2.8"),
                        now=NOW + timedelta(minutes=10))
    db.session.commit()
    [window] = windows()
    assert (window.revoked_by, window.revoked_at) == ("head@example.com",
                                                      NOW + timedelta(minutes=10))
    [event] = actions("preapproval.revoked")
    assert (event.actor, event.target_type, event.details["technician"]) == (
        "head@example.com", "device", "tech@example.com")
    assert create(w, now=NOW + timedelta(minutes=11)).status == "pending"
    again = refused(lambda: preapprovals.revoke(
        user=w.admin, device=w.device, preapproval_id=window.id, actor=CLI,
        now=NOW + timedelta(minutes=12)))
    assert isinstance(again, ConflictError) and "already revoked" in again.message
    assert len(actions("preapproval.revoked")) == 1


def test_an_expired_window_cannot_be_revoked_and_asks_again(w):
    allow(w, create(w), hours="1")
    [window] = windows()
    late = NOW + timedelta(hours=1)
    assert create(w, now=late).status == "pending"
    error = refused(lambda: preapprovals.revoke(user=w.admin, device=w.device,
                                                preapproval_id=window.id, actor=CLI,
                                                now=late))
    assert isinstance(error, ConflictError) and "expired" in error.message
    assert preapprovals.live_on(w.device, late) == []


def test_lowering_the_setting_does_not_cut_an_existing_window(w):
    allow(w, create(w), hours="8")
    configure(w.qa, preapproval_max_hours=0)
    req = create(w, now=NOW + timedelta(hours=7))
    assert req.decided_by == "pre_approval"
    assert req.decision_reason == "pre-approved by ann@example.com until 2026-11-22 18:15 UTC"
