"""Session request use cases (portal/services/requests.py) with the real models and fixed
clocks: the policy applied at creation, approval links and their mail, first decision
wins, deadlines enforced in the data (no scheduler), cancel, the expiry sweep, the outbox
and the audit story of one request."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import ApprovalLink, AuditEvent, OutboxMessage, SessionRequest
from portal.services import agents, crypto, departments
from portal.services import decisions
from portal.services import requests as service
from portal.services.actors import CLI, SYSTEM, Actor
from portal import unit_of_work
from portal.domain.errors import (
    AlreadyDecidedError,
    ExpiredError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    SignInRequiredError,
)

NOW = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)
RECIPIENTS = ["approver@example.com", "second@example.com"]
TOKEN_IN_LINK = re.compile(r"/approvals/([A-Za-z0-9_\-]+)")


@pytest.fixture
def w(make):
    qa = make.department("QA Team")
    other = make.department("Support")
    return SimpleNamespace(
        qa=qa, other=other,
        tech=make.user("tech@example.com", "technician", qa),
        tech2=make.user("tech2@example.com", "technician", qa),
        approver=make.user("approver@example.com", "approver", qa),
        second=make.user("second@example.com", "approver", qa),
        device=make.device(qa, "WIN-0859G9I39J0"),
        foreign=make.device(other, "SUPPORT-PC-1"),
    )


def configure(department, **changes):
    values = {**departments.settings_values(department.settings), **changes}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()


def device_state(device, locked=False, user="alice"):
    agents.update_state(device=device, locked=locked, logged_in_user=user,
                        actor=Actor(label=f"device:{device.name}"), now=NOW)
    db.session.commit()


def both_checks(w, **changes):
    """Confirmation (60 s) and email authorization (180 s) on; somebody at the device."""
    configure(w.qa, is_confirmation_shown=True, is_email_authorization_required=True,
              email_recipients=", ".join(RECIPIENTS), **changes)
    device_state(w.device)


def create(w, now=NOW, device=None, technician=None, **kwargs):
    technician = technician or w.tech
    req = service.create_session_request(
        technician=technician, device_name=(device or w.device).name,
        actor=Actor.for_user(technician, "192.0.2.10"), now=now,
        base_url="http://portal.test", **kwargs)
    db.session.commit()
    return req


def reload(req):
    db.session.expire_all()
    return db.session.get(SessionRequest, req.id)


def count(model, *where):
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def request_events(req):
    return [e for e in db.session.scalars(select(AuditEvent).order_by(AuditEvent.seq))
            if (e.details or {}).get("request_id") == req.id]


def tokens(req):
    messages = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.request_id == req.id).order_by(OutboxMessage.id)).all()
    return {m.recipient: TOKEN_IN_LINK.search(m.body_text).group(1) for m in messages}


def approver_actor(user):
    return Actor.for_user(user, "198.51.100.7")


def allow_link(w, req, token, now, decision="allow", signed_in="recipient"):
    user = w.approver if signed_in == "recipient" else signed_in
    return decisions.decide_with_link(link=decisions.find_link(token), decision=decision, signed_in=user,
                                    actor=approver_actor(w.approver), now=now)


# --- creation: the policy with the real models -------------------------------------------


@pytest.mark.parametrize("what", ["device", "group"])
def test_an_excluded_device_or_group_is_approved_at_once(make, w, what):
    both_checks(w)
    group = make.group(w.qa, "Lab")
    device = make.device(w.qa, "LAB-PC-7", group=group)
    target = f"device:{device.id}" if what == "device" else f"group:{group.id}"
    departments.add_exclusion(department=w.qa, target=target, actor=CLI, now=NOW)
    db.session.commit()
    req = reload(create(w, device=device))
    assert (req.status, req.decided_by, req.decided_at, req.end_user_check,
            req.email_check) == ("approved", "exclusion", NOW, "skipped", "skipped")
    assert ("Lab" in req.decision_reason) is (what == "group")
    assert count(ApprovalLink) == count(OutboxMessage) == 0
    assert [e.action for e in request_events(req)] == ["request.created", "request.decided"]


def test_a_locked_device_skips_the_prompt_unless_shown_when_locked(w):
    configure(w.qa, is_confirmation_shown=True)
    device_state(w.device, locked=True, user="alice")
    req = reload(create(w))
    assert (req.status, req.decided_by, req.decision_reason, req.end_user_check) == (
        "approved", "policy", "device locked; confirmation not shown", "skipped")
    configure(w.qa, is_confirmation_shown=True, is_shown_when_locked=True,
              confirmation_timeout_seconds=45)
    req = reload(create(w))
    assert (req.status, req.end_user_check, req.decided_by, req.decided_at) == (
        "pending", "pending", None, None)
    assert req.end_user_deadline == req.expires_at == NOW + 45 * SECOND
    assert req.prompt_message == w.qa.settings.confirmation_message


def test_nothing_to_ask_is_approved_by_policy(w):
    req = reload(create(w, run_as="Administrator", reason="Printer queue stuck"))
    assert (req.status, req.decided_by, req.decision_reason, req.run_as, req.reason) == (
        "approved", "policy", "confirmation not required", "Administrator",
        "Printer queue stuck")


def test_email_authorization_stores_only_hashes_and_queues_one_mail_per_recipient(w):
    both_checks(w)
    req = reload(create(w))
    assert (req.status, req.end_user_check, req.email_check) == ("pending", "pending",
                                                                 "pending")
    assert req.end_user_deadline == NOW + 60 * SECOND
    assert req.email_deadline == req.expires_at == NOW + 180 * SECOND
    links = db.session.scalars(select(ApprovalLink).order_by(ApprovalLink.id)).all()
    assert [link.recipient_email for link in links] == RECIPIENTS
    raw = tokens(req)
    assert sorted(raw) == sorted(RECIPIENTS)
    for link in links:
        token = raw[link.recipient_email]
        assert re.fullmatch(r"[A-Za-z0-9_\-]{22,}", token)  # >= 128 bits, URL-safe
        assert token != link.token_hash and token not in link.token_hash
        assert link.token_hash == crypto.keyed_hash(token)
        assert decisions.find_link(token).id == link.id
    assert raw[RECIPIENTS[0]] != raw[RECIPIENTS[1]]
    message = db.session.scalars(select(OutboxMessage)).first()
    assert message.subject == "Remote session request for WIN-0859G9I39J0"
    assert "Check Request: http://portal.test/approvals/" in message.body_text
    assert message.status == "pending"


def test_request_links_and_mail_are_written_in_one_transaction(w):
    both_checks(w)
    service.create_session_request(technician=w.tech, device_name=w.device.name,
                                   actor=CLI, now=NOW, base_url="http://portal.test")
    assert count(SessionRequest) == 1 and count(OutboxMessage) == 2
    db.session.rollback()
    assert count(SessionRequest) == count(ApprovalLink) == count(OutboxMessage) == 0


@pytest.mark.parametrize("device_name", ["SUPPORT-PC-1", "NO-SUCH-PC"])
def test_a_device_outside_the_technicians_departments_is_not_found(w, device_name):
    with pytest.raises(NotFoundError):
        service.create_session_request(technician=w.tech, device_name=device_name,
                                       actor=CLI, now=NOW, base_url="http://portal.test")


@pytest.mark.parametrize("field, value", [("run_as", "u" * 257), ("reason", "r" * 1001),
                                          ("run_as", "bad\nname")])
def test_too_long_or_odd_input_is_invalid_and_nothing_is_written(w, field, value):
    with pytest.raises(InvalidInputError) as exc:
        service.create_session_request(technician=w.tech, device_name=w.device.name,
                                       actor=CLI, now=NOW, base_url="http://portal.test",
                                       **{field: value})
    assert field in exc.value.field_errors
    assert count(SessionRequest) == 0


# --- deciding ------------------------------------------------------------------------------


@pytest.mark.parametrize("decision, status, check", [("accept", "approved", "accepted"),
                                                     ("decline", "denied", "declined")])
def test_the_end_user_decides(w, decision, status, check):
    both_checks(w)
    req = create(w)
    decisions.decide_by_end_user(device=w.device, request_id=req.id, decision=decision,
                               actor=Actor(label="device:WIN-0859G9I39J0"),
                               now=NOW + 5 * SECOND)
    db.session.commit()
    req = reload(req)
    assert (req.status, req.decided_by, req.end_user_check, req.decided_at) == (
        status, "end_user", check, NOW + 5 * SECOND)
    assert count(OutboxMessage, OutboxMessage.status == "pending") == 0


@pytest.mark.parametrize("decision, status", [("allow", "approved"), ("deny", "denied")])
def test_a_recipient_decides_with_the_link(w, decision, status):
    both_checks(w)
    req = create(w)
    allow_link(w, req, tokens(req)[w.approver.email], NOW + 90 * SECOND, decision)
    db.session.commit()
    req = reload(req)
    assert (req.status, req.decided_by, req.email_check, req.decided_at) == (
        status, "approver@example.com", "allowed" if status == "approved" else "denied",
        NOW + 90 * SECOND)


def test_a_link_needs_its_signed_in_recipient_unless_the_department_waives_it(w):
    both_checks(w)
    req = create(w)
    token = tokens(req)[w.approver.email]
    with pytest.raises(SignInRequiredError):
        allow_link(w, req, token, NOW, signed_in=None)
    with pytest.raises(ForbiddenError):
        allow_link(w, req, token, NOW, signed_in=w.second)  # another recipient
    assert reload(req).status == "pending"
    configure(w.qa, is_sign_in_required_to_decide=False)
    waived = create(w, device=w.device)
    allow_link(w, waived, tokens(waived)[w.approver.email], NOW, signed_in=None)
    db.session.commit()
    assert reload(waived).decided_by == "approver@example.com"


def test_turning_sign_in_off_never_loosens_a_link_already_sent(w):
    both_checks(w)
    strict = create(w)
    configure(w.qa, is_sign_in_required_to_decide=False)
    with pytest.raises(SignInRequiredError):  # mailed while sign-in was required
        allow_link(w, strict, tokens(strict)[w.approver.email], NOW + SECOND, signed_in=None)
    assert reload(strict).status == "pending"
    waived = create(w, now=NOW + SECOND)
    configure(w.qa, is_sign_in_required_to_decide=True)
    with pytest.raises(SignInRequiredError):  # the stricter of the link's rule and today's
        allow_link(w, waived, tokens(waived)[w.approver.email], NOW + SECOND, signed_in=None)
    allow_link(w, strict, tokens(strict)[w.approver.email], NOW + 2 * SECOND)
    db.session.commit()
    assert (reload(strict).status, reload(waived).status) == ("approved", "pending")


@pytest.mark.parametrize("signed_in", ["recipient", None])
def test_removing_a_recipient_ends_their_pending_links(w, signed_in):
    both_checks(w, is_sign_in_required_to_decide=signed_in is not None)
    req = create(w)
    removed, kept = tokens(req)[w.approver.email], tokens(req)[w.second.email]
    configure(w.qa, email_recipients=w.second.email)
    with pytest.raises(ForbiddenError, match="no longer"):
        allow_link(w, req, removed, NOW + SECOND, signed_in=signed_in)
    assert reload(req).status == "pending"
    decisions.decide_with_link(link=decisions.find_link(kept), decision="deny",
                               signed_in=w.second if signed_in else None,
                               actor=approver_actor(w.second), now=NOW + SECOND)
    db.session.commit()
    assert (reload(req).status, reload(req).decided_by) == ("denied", w.second.email)


def test_nobody_decides_their_own_request(make, w):
    """A technician who is also an approver and a recipient gets 403 on their own
    request, in the portal and by link (signed in, or with sign-in waived)."""
    both_checks(w)
    make.user(w.tech.email, "approver", w.qa)
    configure(w.qa, email_recipients=f"{w.tech.email}, {w.approver.email}")
    req = create(w)
    own_link = tokens(req)[w.tech.email]
    with pytest.raises(ForbiddenError, match="own request"):
        decisions.decide_in_portal(user=w.tech, request_id=req.id, decision="allow",
                                   actor=approver_actor(w.tech), now=NOW + SECOND)
    with pytest.raises(ForbiddenError, match="own request"):
        allow_link(w, req, own_link, NOW + SECOND, signed_in=w.tech)
    configure(w.qa, is_sign_in_required_to_decide=False)
    waived = create(w, now=NOW + SECOND)
    with pytest.raises(ForbiddenError, match="own request"):
        allow_link(w, waived, tokens(waived)[w.tech.email], NOW + 2 * SECOND,
                   signed_in=None)
    assert (reload(req).status, reload(waived).status) == ("pending", "pending")
    # Anybody else still decides it.
    decisions.decide_in_portal(user=w.approver, request_id=req.id, decision="allow",
                               actor=approver_actor(w.approver), now=NOW + 2 * SECOND)
    db.session.commit()
    assert reload(req).status == "approved"


@pytest.mark.parametrize("role, allowed", [("approver", True), ("department_admin", True),
                                           ("admin", True), ("technician", False),
                                           ("auditor", False), ("approver@other", False)])
def test_deciding_in_the_portal_needs_an_approver(make, w, role, allowed):
    both_checks(w)
    req = create(w)
    department = w.other if role.endswith("@other") else w.qa
    user = make.user("decider@example.com", role.split("@")[0], department)

    def decide():
        decisions.decide_in_portal(user=user, request_id=req.id, decision="deny",
                                 actor=approver_actor(user), now=NOW + SECOND,
                                 comment="Not during the audit")
    if not allowed:
        with pytest.raises(ForbiddenError):
            decide()
        assert reload(req).status == "pending"
        return
    decide()
    db.session.commit()
    req = reload(req)
    assert (req.status, req.decided_by, req.decision_reason) == (
        "denied", "decider@example.com", "Not during the audit")


def test_the_first_decision_wins_and_later_ones_change_nothing(w):
    both_checks(w)
    req = create(w)
    raw = tokens(req)
    allow_link(w, req, raw[w.approver.email], NOW + 10 * SECOND)
    db.session.commit()
    later = NOW + 20 * SECOND
    attempts = [
        lambda: decisions.decide_in_portal(user=w.second, request_id=req.id, decision="deny",
                                         actor=approver_actor(w.second), now=later),
        lambda: decisions.decide_with_link(link=decisions.find_link(raw[w.second.email]),
                                         decision="deny", signed_in=w.second,
                                         actor=approver_actor(w.second), now=later),
        lambda: decisions.decide_by_end_user(device=w.device, request_id=req.id,
                                           decision="decline", actor=CLI, now=later),
        lambda: decisions.cancel_request(user=w.tech, request_id=req.id, actor=CLI,
                                       now=later),
    ]
    for attempt in attempts:
        with pytest.raises(AlreadyDecidedError) as exc:
            attempt()
        assert exc.value.code == "already_decided"
        db.session.rollback()
    req = reload(req)
    assert (req.status, req.decided_by, req.decided_at, req.email_check) == (
        "approved", "approver@example.com", NOW + 10 * SECOND, "allowed")
    assert [e.action for e in request_events(req)].count("request.decided") == 1


@pytest.mark.parametrize("how", ["portal", "link", "cancel"])
@pytest.mark.parametrize("late", [timedelta(0), SECOND, timedelta(days=1)])
def test_a_decision_at_or_after_expires_at_is_410_and_the_request_times_out(w, how, late):
    both_checks(w)
    req = create(w)
    at = req.expires_at + late
    with pytest.raises(ExpiredError) as exc:
        if how == "portal":
            decisions.decide_in_portal(user=w.approver, request_id=req.id, decision="allow",
                                     actor=CLI, now=at)
        elif how == "link":
            allow_link(w, req, tokens(req)[w.approver.email], at)
        else:
            decisions.cancel_request(user=w.tech, request_id=req.id, actor=CLI, now=at)
    assert exc.value.code == "expired"
    unit_of_work.finish(succeeded=False)  # as a request ends: the timed_out mark is kept
    req = reload(req)
    assert (req.status, req.decided_at, req.decided_by) == ("timed_out", at, None)
    assert [e.action for e in request_events(req)].count("request.timed_out") == 1


def test_the_end_user_is_late_at_their_own_deadline_while_email_still_decides(w):
    both_checks(w)
    req = create(w)
    for late in (timedelta(0), SECOND):
        with pytest.raises(ExpiredError):
            decisions.decide_by_end_user(device=w.device, request_id=req.id,
                                         decision="accept", actor=CLI,
                                         now=req.end_user_deadline + late)
        db.session.rollback()
    assert reload(req).status == "pending"
    allow_link(w, req, tokens(req)[w.approver.email], req.end_user_deadline + SECOND)
    db.session.commit()
    assert reload(req).status == "approved"


# --- cancel -------------------------------------------------------------------------------


def test_only_the_own_technician_cancels_and_only_while_pending(w):
    both_checks(w)
    req = create(w)
    with pytest.raises(NotFoundError):
        decisions.cancel_request(user=w.tech2, request_id=req.id, actor=CLI, now=NOW)
    decisions.cancel_request(user=w.tech, request_id=req.id,
                           actor=Actor.for_user(w.tech, "192.0.2.10"), now=NOW + SECOND)
    db.session.commit()
    req = reload(req)
    assert (req.status, req.decided_at, req.decided_by) == ("cancelled", NOW + SECOND, None)
    with pytest.raises(AlreadyDecidedError):
        decisions.cancel_request(user=w.tech, request_id=req.id, actor=CLI,
                                 now=NOW + 2 * SECOND)


# --- expiry -------------------------------------------------------------------------------


def test_expire_overdue_moves_only_overdue_pending_requests_once(w):
    both_checks(w)
    overdue = create(w, now=NOW - 200 * SECOND)
    exactly_due = create(w, now=NOW - 180 * SECOND)
    open_one = create(w, now=NOW - 100 * SECOND)
    decided = create(w, now=NOW - 300 * SECOND)
    decisions.cancel_request(user=w.tech, request_id=decided.id, actor=CLI,
                           now=NOW - 290 * SECOND)
    db.session.commit()
    expired = decisions.expire_overdue(NOW)
    db.session.commit()
    assert sorted(expired) == sorted([overdue.id, exactly_due.id])
    assert [reload(r).status for r in (overdue, exactly_due, open_one, decided)] == [
        "timed_out", "timed_out", "pending", "cancelled"]
    assert reload(overdue).decided_at == NOW
    for req in (overdue, exactly_due):
        events = [e for e in request_events(req) if e.action == "request.timed_out"]
        assert len(events) == 1 and events[0].actor == SYSTEM.label
    assert decisions.expire_overdue(NOW + SECOND) == []
    db.session.commit()
    assert count(AuditEvent, AuditEvent.action == "request.timed_out") == 2


# --- the outbox follows the request --------------------------------------------------------


@pytest.mark.parametrize("end", ["decided", "cancelled", "expired"])
def test_mail_of_a_finished_request_is_cancelled_and_loses_its_token(w, end):
    both_checks(w)
    req = create(w)
    raw = tokens(req)
    if end == "decided":
        allow_link(w, req, raw[w.approver.email], NOW + SECOND, "deny")
    elif end == "cancelled":
        decisions.cancel_request(user=w.tech, request_id=req.id, actor=CLI, now=NOW + SECOND)
    else:
        decisions.expire_overdue(req.expires_at)
    db.session.commit()
    db.session.expire_all()
    messages = db.session.scalars(select(OutboxMessage)).all()
    assert [m.status for m in messages] == ["cancelled", "cancelled"]
    for message in messages:
        for token in raw.values():
            assert token not in message.body_text and token not in message.body_html


# --- the audit story of one request -------------------------------------------------------


def test_the_audit_trail_tells_the_story_of_one_request(w):
    both_checks(w)
    req = create(w, run_as="Administrator", reason="Printer queue stuck")
    create(w)  # another request: not part of this story
    raw = tokens(req)
    allow_link(w, req, raw[w.approver.email], NOW + 30 * SECOND)
    db.session.commit()
    events = request_events(req)
    assert [e.action for e in events] == [
        "request.created", "email.queued", "email.queued", "request.decided"]
    created, queued1, queued2, decided = events
    assert (created.actor, created.client_ip, created.occurred_at) == (
        "tech@example.com", "192.0.2.10", NOW)
    assert created.details["run_as"] == "Administrator"
    assert [queued1.details["recipient"], queued2.details["recipient"]] == RECIPIENTS
    assert (decided.actor, decided.actor_user_id, decided.client_ip, decided.occurred_at) == (
        "approver@example.com", w.approver.id, "198.51.100.7", NOW + 30 * SECOND)
    assert (decided.details["status"], decided.details["decided_by"]) == (
        "approved", "approver@example.com")
    assert all(e.target_type == "session_request" and e.target_id == str(req.id)
               and e.department_id == w.qa.id for e in events)
    for token in raw.values():
        assert all(token not in str(e.details) for e in events)
