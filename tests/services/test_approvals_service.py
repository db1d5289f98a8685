"""Approvals that resist fatigue and fraud, on the data (portal/services/approvals.py and
decisions.py): a required reason and a cool-down refused at creation before exclusions,
N distinct Allows, number matching, "I didn't expect this" with its admin email and
cool-down, and the audit events of each."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from factories import NOW
from sqlalchemy import func, select

from portal import unit_of_work
from portal.domain.errors import (
    AlreadyDecidedError,
    InvalidInputError,
    NumberRequiredError,
    ReasonRequiredError,
    ReportedError,
)
from portal.extensions import db
from portal.models import (AuditEvent, OutboxMessage, RequestApproval, RequestReport,
                           SessionRequest)
from portal.services import agents, decisions, departments, mail
from portal.services import requests as service
from portal.services.actors import CLI, Actor

SECOND = timedelta(seconds=1)
R1, R2, R3 = "ann@example.com", "bob@example.com", "cy@example.com"
REASON = "Ticket INC-100042"


@pytest.fixture
def w(make):
    qa = make.department("QA Team")
    return SimpleNamespace(
        qa=qa,
        tech=make.user("tech@example.com", "technician", qa),
        ann=make.user(R1, "approver", qa), bob=make.user(R2, "approver", qa),
        cy=make.user(R3, "approver", qa),
        admin=make.user("head@example.com", "department_admin", qa),
        admin2=make.user("deputy@example.com", "department_admin", qa),
        device=make.device(qa, "WIN-0859G9I39J0"),
    )


def configure(department, **changes):
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True,
              "email_recipients": f"{R1}\n{R2}\n{R3}", **changes}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()


def create(w, now=NOW, **kwargs):
    kwargs.setdefault("reason", REASON)
    req = service.create_session_request(
        technician=w.tech, device_name=w.device.name,
        actor=Actor.for_user(w.tech, "192.0.2.10"), now=now,
        base_url="http://portal.test", **kwargs)
    db.session.commit()
    TOKENS[req.id] = tokens(req)  # before a decision redacts them
    return req


TOKENS: dict[int, dict[str, str]] = {}


def refused(call):
    """Run a call that must fail the way a request's unit of work would."""
    with pytest.raises(Exception) as caught:
        call()
    unit_of_work.finish(succeeded=False)
    return caught.value


def tokens(req):
    return {m.recipient: mail.approval_links_in(m)[0].rsplit("/", 1)[1]
            for m in db.session.scalars(select(OutboxMessage).where(
                OutboxMessage.request_id == req.id))}


def by_link(req, who, decision="allow", now=NOW + SECOND, **kwargs):
    token = TOKENS[req.id][who.email]
    result = decisions.decide_with_link(
        link=decisions.find_link(token), decision=decision, signed_in=who,
        actor=Actor.for_user(who, "198.51.100.7"), now=now,
        user_agent="Mozilla/5.0 (iPhone)", **kwargs)
    db.session.commit()
    return result


def in_portal(req, who, decision="allow", now=NOW + SECOND, **kwargs):
    result = decisions.decide_in_portal(
        user=who, request_id=req.id, decision=decision,
        actor=Actor.for_user(who, "198.51.100.8"), now=now, user_agent="Firefox", **kwargs)
    db.session.commit()
    return result


def reload(req):
    db.session.expire_all()
    return db.session.get(SessionRequest, req.id)


def events(action):
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                   .order_by(AuditEvent.seq)))


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


# --- at creation ---------------------------------------------------------------------


@pytest.mark.parametrize("reason", [None, ".", "..........", "ok ok", "-- ab -- --"])
def test_a_required_reason_that_is_not_one_is_refused_and_audited(w, reason):
    configure(w.qa, is_reason_required=True)
    error = refused(lambda: create(w, reason=reason))
    assert isinstance(error, ReasonRequiredError) and error.code == "reason_required"
    assert list(error.field_errors) == ["reason"]
    assert count(SessionRequest) == 0
    [event] = events("request.reason_refused")
    assert (event.actor, event.client_ip, event.outcome) == (
        "tech@example.com", "192.0.2.10", "failure")
    assert create(w).status == "pending"  # a real reason goes through


def test_cool_down_and_reason_are_refused_before_exclusions(w):
    configure(w.qa, is_reason_required=True)
    departments.add_exclusion(department=w.qa, target=f"device:{w.device.id}", actor=CLI,
                              now=NOW)
    db.session.commit()
    assert isinstance(refused(lambda: create(w, reason="x")), ReasonRequiredError)
    db.session.add(RequestReport(
        request_id=create(w).id, department_id=w.qa.id, device_id=w.device.id,
        technician_id=w.tech.id, reported_by=R1, reported_at=NOW,
        cooldown_until=NOW + timedelta(minutes=30)))
    db.session.commit()
    error = refused(lambda: create(w, now=NOW + 10 * SECOND))
    assert isinstance(error, ReportedError) and error.code == "reported"
    assert error.retry_after == 30 * 60 - 10 and "10:45:30 UTC" in error.message
    assert count(SessionRequest) == 1


# --- N of M --------------------------------------------------------------------------


def test_two_distinct_allows_approve_and_the_second_decides(w):
    configure(w.qa, approvals_required=2)
    req = create(w)
    assert req.approvals_required == 2
    assert all("2 approvers must allow it; one Deny denies it." in m.body_text
               for m in db.session.scalars(select(OutboxMessage)))
    by_link(req, w.ann, comment="Looks right")
    req = reload(req)
    assert (req.status, req.approvals_received, service.reading(req, NOW).approvals.label()
            ) == ("pending", 1, "1 of 2 approvals")
    with pytest.raises(AlreadyDecidedError):  # the same person, by the portal this time
        in_portal(req, w.ann)
    db.session.rollback()
    in_portal(req, w.bob, now=NOW + 2 * SECOND, comment="Second look: fine")
    req = reload(req)
    assert (req.status, req.decided_by, req.decision_reason, req.decided_at) == (
        "approved", R2, "Second look: fine", NOW + 2 * SECOND)
    assert service.reading(req, NOW).approvals.by == (R1, R2)
    assert sorted(db.session.scalars(select(RequestApproval.approver_email))) == [R1, R2]
    counted = events("approval.counted")
    assert [(e.details["approver"], e.details["received"]) for e in counted] == [
        (R1, 1), (R2, 2)]
    assert (counted[0].actor, counted[0].client_ip, counted[0].details["user_agent"]) == (
        R1, "198.51.100.7", "Mozilla/5.0 (iPhone)")
    assert len(events("request.decided")) == 1
    with pytest.raises(AlreadyDecidedError):
        by_link(req, w.cy)


@pytest.mark.parametrize("then", ["deny", "report"])
def test_who_counted_an_allow_cannot_then_deny_or_report(w, then):
    configure(w.qa, approvals_required=2)
    req = create(w)
    by_link(req, w.ann)
    with pytest.raises(AlreadyDecidedError):
        by_link(req, w.ann, then)
    db.session.rollback()
    assert reload(req).status == "pending"
    in_portal(req, w.bob, "deny", comment="Not today")
    req = reload(req)
    assert (req.status, req.decided_by, req.decision_reason) == ("denied", R2, "Not today")


def test_an_end_users_accept_still_approves_at_once(w):
    configure(w.qa, approvals_required=3, is_confirmation_shown=True)
    agents.update_state(device=w.device, locked=False, logged_in_user="alice",
                        actor=CLI, now=NOW)
    req = create(w)
    decisions.decide_by_end_user(device=w.device, request_id=req.id, decision="accept",
                                 actor=CLI, now=NOW + SECOND)
    assert reload(req).status == "approved"


# --- number matching -----------------------------------------------------------------


def test_number_matching_right_wrong_missing_and_foreign_numbers(w):
    configure(w.qa, is_number_matching_required=True)
    req = create(w)
    choices = service.reading(req, NOW).choices
    assert 10 <= req.match_number <= 99 and req.match_number in choices
    assert len(set(choices)) == 3
    for number, error in [(None, NumberRequiredError), (100, InvalidInputError),
                          ("", NumberRequiredError)]:
        with pytest.raises(error) as caught:
            by_link(req, w.ann, number=number)
        assert list(caught.value.field_errors) == ["number"]
        db.session.rollback()
    assert reload(req).status == "pending"
    wrong = next(c for c in choices if c != req.match_number)
    by_link(req, w.ann, number=str(wrong), comment="hm")
    req = reload(req)
    assert (req.status, req.decided_by, req.email_check) == ("denied", R1, "denied")
    assert "number did not match" in req.decision_reason
    assert service.reading(req, NOW).match_number is None  # null once decided
    [event] = events("request.number_mismatch")
    assert (event.actor, event.client_ip, event.details["number"]) == (
        R1, "198.51.100.7", wrong)


def test_the_right_number_allows_and_deny_needs_none(w):
    configure(w.qa, is_number_matching_required=True)
    req = create(w)
    by_link(req, w.ann, number=req.match_number)
    assert reload(req).status == "approved"
    req = create(w)
    in_portal(req, w.bob, "deny")
    assert reload(req).status == "denied"


def test_the_end_user_must_match_the_number_too(w):
    configure(w.qa, is_number_matching_required=True, is_confirmation_shown=True,
              is_email_authorization_required=False)
    agents.update_state(device=w.device, locked=False, logged_in_user="alice",
                        actor=CLI, now=NOW)
    req = create(w)
    with pytest.raises(NumberRequiredError):
        decisions.decide_by_end_user(device=w.device, request_id=req.id,
                                     decision="accept", actor=CLI, now=NOW + SECOND)
    db.session.rollback()
    wrong = next(c for c in service.reading(req, NOW).choices if c != req.match_number)
    decisions.decide_by_end_user(device=w.device, request_id=req.id, decision="accept",
                                 number=wrong, actor=CLI, now=NOW + SECOND)
    db.session.commit()
    req = reload(req)
    assert (req.status, req.decided_by, req.end_user_check) == (
        "denied", "end_user", "declined")
    assert "number did not match" in req.decision_reason


# --- "I didn't expect this" ----------------------------------------------------------


def test_a_report_denies_alerts_the_admins_and_starts_the_cool_down(w):
    configure(w.qa, report_cooldown_minutes=15)
    req = create(w)
    by_link(req, w.ann, "report")
    req = reload(req)
    reading = service.reading(req, NOW)
    assert (req.status, req.decided_by, req.email_check) == ("denied", R1, "denied")
    assert reading.outcome == f"The request was reported as unexpected by {R1}."
    alerts = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.request_id.is_(None)).order_by(OutboxMessage.recipient)).all()
    assert [m.recipient for m in alerts] == ["deputy@example.com", "head@example.com"]
    assert {m.status for m in alerts} == {"pending"}  # the request being over cancels none
    assert "WIN-0859G9I39J0" in alerts[0].subject and "tech@example.com" in alerts[0].subject
    [event] = events("request.reported")
    assert (event.actor, event.client_ip, event.details["user_agent"]) == (
        R1, "198.51.100.7", "Mozilla/5.0 (iPhone)")
    error = refused(lambda: create(w, now=NOW + 60 * SECOND))
    assert isinstance(error, ReportedError) and error.retry_after == 14 * 60 + 1
    assert len(events("request.cooldown_refused")) == 1
    assert create(w, now=NOW + timedelta(minutes=15) + SECOND).status == "pending"  # over


def test_the_end_user_reports(w):
    configure(w.qa, is_confirmation_shown=True, is_email_authorization_required=False)
    agents.update_state(device=w.device, locked=False, logged_in_user="alice",
                        actor=CLI, now=NOW)
    req = create(w)
    decisions.decide_by_end_user(device=w.device, request_id=req.id, decision="report",
                                 actor=Actor(label="device:WIN-0859G9I39J0"),
                                 now=NOW + SECOND)
    db.session.commit()
    req = reload(req)
    assert (req.status, req.decided_by, req.end_user_check) == (
        "denied", "end_user", "declined")
    assert service.reading(req, NOW).outcome == \
        "The request was reported as unexpected by the end user."
    assert count(RequestReport) == 1
    with pytest.raises(AlreadyDecidedError):  # only a pending request can be reported
        in_portal(req, w.ann, "report")
