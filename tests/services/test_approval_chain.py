"""The approval chain on the data (portal/services/chain.py with requests.py and
decisions.py): end user → email approvers → escalation. The approvers are mailed only when
the prompt is skipped or its deadline passes unanswered; `expires_at` is fixed at creation
whenever the job runs; a request decided meanwhile is never mailed or escalated; each step
is taken once however often the job runs; escalation links work like any recipient's."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from factories import NOW
from sqlalchemy import select

from portal import unit_of_work
from portal.domain.errors import AlreadyDecidedError, ExpiredError, ForbiddenError
from portal.domain.requests import MSG_FALLBACK
from portal.extensions import db
from portal.models import AuditEvent, OutboxMessage, SessionRequest
from portal.services import chain, decisions, departments, mail
from portal.services import requests as service
from portal.services.actors import CLI, Actor

S = timedelta(seconds=1)
BASE = "http://portal.test"
R1, R2 = "first-approver@example.com", "second-approver@example.com"
ONCALL, LEAD = "on-call@example.com", "lead@example.com"
DEVICE = "WIN-0859G9I39J0"


@pytest.fixture
def w(make):
    qa = make.department("QA Team")
    device = make.device(qa, DEVICE)
    device.logged_in_user = "alice"  # somebody could answer the prompt
    w = SimpleNamespace(qa=qa, device=device,
                        tech=make.user("tech@example.com", "technician", qa),
                        users={e: make.user(e, "approver", qa)
                               for e in (R1, R2, ONCALL, LEAD)})
    configure(qa)
    return w


def configure(department, **changes):
    values = {**departments.settings_values(department.settings),
              "is_confirmation_shown": True, "confirmation_timeout_seconds": 60,
              "is_email_authorization_required": True,
              "email_authorization_timeout_seconds": 180,
              "email_recipients": f"{R1}\n{R2}", "is_fallback_to_email": True, **changes}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()


def create(w, now=NOW) -> SessionRequest:
    req = service.create_session_request(technician=w.tech, device_name=DEVICE,
                                         actor=Actor.for_user(w.tech, "192.0.2.10"),
                                         now=now, base_url=BASE)
    db.session.commit()
    return req


def step(now):
    taken, _more = chain.take_due_steps(now, base_url=BASE)
    db.session.commit()
    return taken


def reload(req):
    db.session.expire_all()
    return db.session.get(SessionRequest, req.id)


def mailed(req) -> list[str]:
    db.session.expire_all()
    return [m.recipient for m in db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.request_id == req.id)
        .order_by(OutboxMessage.id))]


def tokens(req) -> dict[str, str]:
    db.session.expire_all()
    return {m.recipient: mail.approval_links_in(m, BASE)[0].rsplit("/", 1)[1]
            for m in db.session.scalars(select(OutboxMessage).where(
                OutboxMessage.request_id == req.id, OutboxMessage.status == "pending"))}


def events(req, action):
    db.session.expire_all()
    return [e.details for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action,
                                 AuditEvent.target_id == str(req.id))
        .order_by(AuditEvent.seq))]


def refused(call):
    with pytest.raises(Exception) as caught:
        call()
    unit_of_work.finish(succeeded=False)
    return caught.value


def by_link(w, req, recipient, decision="allow", now=None):
    link = decisions.find_link(tokens(req)[recipient])
    return decisions.decide_with_link(
        link=link, decision=decision, signed_in=w.users[recipient],
        actor=Actor.for_user(w.users[recipient], "192.0.2.7"), now=now or NOW)


def end_user(w, req, decision, now):
    return decisions.decide_by_end_user(device=w.device, request_id=req.id,
                                        decision=decision,
                                        actor=Actor(label=f"device:{DEVICE}"), now=now)


# --- fallback ------------------------------------------------------------------------


def test_the_approvers_are_mailed_when_the_prompt_times_out_unanswered(w):
    req = create(w)
    assert (req.end_user_check, req.email_check) == ("pending", "waiting")
    assert mailed(req) == [] and events(req, "email.queued") == []
    assert reload(req).expires_at == NOW + 240 * S  # the prompt's 60 s + the email's 180 s
    reading = service.reading(reload(req), NOW + 30 * S)
    assert reading.email.value == "waiting" and reading.progress is None

    assert step(NOW + 59.9 * S) == []  # not before the prompt's deadline
    assert mailed(req) == []
    assert step(NOW + 60 * S) == [(req.id, "fallback")]
    assert sorted(mailed(req)) == [R1, R2]
    req = reload(req)
    assert (req.end_user_check, req.email_check) == ("timed_out", "pending")
    assert req.fallback_mailed_at == NOW + 60 * S
    assert req.expires_at == NOW + 240 * S  # unchanged
    [fallback] = events(req, "request.fallback_mailed")
    assert fallback["recipients"] == [R1, R2]
    assert fallback["because"] == "the end user didn't answer"
    assert sorted(e["recipient"] for e in events(req, "email.queued")) == [R1, R2]
    reading = service.reading(req, NOW + 61 * S)
    assert (reading.end_user.value, reading.email.value) == ("timed_out", "pending")
    assert reading.progress == MSG_FALLBACK

    assert step(NOW + 61 * S) == [] and step(NOW + 500 * S) == []  # taken once
    assert len(mailed(req)) == 2


def test_a_late_job_neither_stretches_nor_cuts_the_deadline(w):
    req = create(w)
    assert step(NOW + 200 * S) == [(req.id, "fallback")]  # 140 s late
    req = reload(req)
    assert req.expires_at == NOW + 240 * S
    [message] = [m for m in db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.request_id == req.id, OutboxMessage.recipient == R1))]
    assert "valid for 40 seconds" in message.body_text  # what is left of the fixed deadline
    # The links work until that deadline, and not a moment longer.
    links = tokens(req)
    by_link(w, req, R2, now=NOW + 239 * S)
    db.session.commit()
    assert reload(req).status == "approved"
    late = decisions.find_link(links[R1])
    assert isinstance(refused(lambda: decisions.decide_with_link(
        link=late, decision="deny", signed_in=w.users[R1], actor=CLI,
        now=NOW + 240 * S)), ExpiredError)


def test_a_request_past_its_deadline_is_not_mailed(w):
    req = create(w)
    assert step(NOW + 240 * S) == []  # the scheduler was down the whole time
    assert mailed(req) == []
    assert reload(req).chain_due_at is None  # and the step is not looked at again


@pytest.mark.parametrize("decision, status", [("accept", "approved"), ("decline", "denied")])
def test_an_end_user_answer_while_the_approvers_wait_leaves_the_email_check_skipped(
        w, decision, status):
    req = create(w)
    end_user(w, req, decision, NOW + 10 * S)
    db.session.commit()
    req = reload(req)
    assert (req.status, req.email_check, req.chain_due_at) == (status, "skipped", None)
    assert step(NOW + 60 * S) == []
    assert mailed(req) == []
    reading = service.reading(req, NOW + 61 * S)
    assert reading.email.value == "skipped" and reading.progress is None


def test_an_end_user_accept_after_the_prompts_deadline_is_refused_with_410(w):
    req = create(w)
    # The job has not run yet: the prompt's own deadline is what counts.
    assert isinstance(refused(lambda: end_user(w, req, "accept", NOW + 60 * S)),
                      ExpiredError)
    assert reload(req).status == "pending"
    assert step(NOW + 60.5 * S) == [(req.id, "fallback")]
    assert isinstance(refused(lambda: end_user(w, req, "accept", NOW + 61 * S)),
                      ExpiredError)
    assert reload(req).status == "pending"


@pytest.mark.parametrize("state, because", [
    ({"is_locked": True}, "device locked; confirmation not shown"),
    ({"logged_in_user": None}, "nobody logged in; confirmation not shown")])
def test_a_skipped_prompt_mails_the_approvers_at_once(w, state, because):
    for name, value in state.items():
        setattr(w.device, name, value)
    db.session.commit()
    req = create(w)
    assert (req.end_user_check, req.email_check) == ("skipped", "pending")
    assert sorted(mailed(req)) == [R1, R2]
    assert reload(req).expires_at == NOW + 180 * S  # the email timeout alone
    [fallback] = events(req, "request.fallback_mailed")
    assert fallback["because"] == because
    assert service.reading(reload(req), NOW + S).progress == MSG_FALLBACK
    assert step(NOW + 500 * S) == []


def test_without_the_setting_both_checks_run_side_by_side(w):
    configure(w.qa, is_fallback_to_email=False)
    req = create(w)
    assert (req.end_user_check, req.email_check) == ("pending", "pending")
    assert sorted(mailed(req)) == [R1, R2]
    assert reload(req).expires_at == NOW + 180 * S
    assert events(req, "request.fallback_mailed") == []
    assert step(NOW + 500 * S) == []


def test_a_portal_approver_may_decide_before_the_approvers_are_mailed(w):
    req = create(w)
    decisions.decide_in_portal(user=w.users[LEAD], request_id=req.id, decision="allow",
                               actor=Actor.for_user(w.users[LEAD], "192.0.2.8"),
                               now=NOW + 5 * S)
    db.session.commit()
    req = reload(req)
    assert (req.status, req.email_check, req.chain_due_at) == ("approved", "skipped", None)
    assert step(NOW + 60 * S) == [] and mailed(req) == []


# --- escalation ----------------------------------------------------------------------


def test_a_request_still_pending_is_escalated_once(w):
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=f"{ONCALL}\n{R1}",
              escalate_after_seconds=120)
    req = create(w)
    assert reload(req).chain_due_at == NOW + 120 * S
    assert step(NOW + 119 * S) == []
    assert step(NOW + 120 * S) == [(req.id, "escalation")]
    assert mailed(req) == [R1, R2, ONCALL]  # R1 is a recipient already: not mailed twice
    [escalation] = events(req, "request.escalated")
    assert escalation == {**escalation, "recipients": [ONCALL], "after_seconds": 120}
    assert events(req, "email.queued")[-1]["recipient"] == ONCALL
    message = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.recipient == ONCALL)).one()
    assert message.subject == f"Escalated: remote session request for {DEVICE}"
    assert "escalation contact" in message.body_text
    req = reload(req)
    assert req.escalated_at == NOW + 120 * S and req.expires_at == NOW + 180 * S
    assert req.chain_due_at is None
    assert step(NOW + 121 * S) == [] and len(mailed(req)) == 3

    by_link(w, req, ONCALL, now=NOW + 130 * S)  # works like any recipient's link
    db.session.commit()
    assert (reload(req).status, reload(req).decided_by) == ("approved", ONCALL)


def test_the_chain_end_user_then_approvers_then_escalation(w):
    configure(w.qa, escalation_recipients=ONCALL, escalate_after_seconds=60)
    req = create(w)
    assert step(NOW + 60 * S) == [(req.id, "fallback")]
    assert reload(req).chain_due_at == NOW + 120 * S  # "Escalate after" from the mailing
    assert step(NOW + 120 * S) == [(req.id, "escalation")]
    assert sorted(mailed(req)) == sorted([R1, R2, ONCALL])
    assert [e.action for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.target_id == str(req.id),
                                 AuditEvent.action.like("request.%"))
        .order_by(AuditEvent.seq))] == ["request.created", "request.fallback_mailed",
                                        "request.escalated"]


@pytest.mark.parametrize("how", ["allow", "deny", "cancel"])
def test_a_request_decided_meanwhile_is_never_escalated(w, how):
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=ONCALL)
    req = create(w)
    if how == "cancel":
        decisions.cancel_request(user=w.tech, request_id=req.id, actor=CLI, now=NOW + S)
    else:
        by_link(w, req, R1, how, now=NOW + S)
    db.session.commit()
    assert step(NOW + 120 * S) == []
    assert ONCALL not in mailed(req) and events(req, "request.escalated") == []


def test_escalation_reads_the_settings_when_it_fires(w):
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=ONCALL)
    first, second = create(w), create(w, NOW + S)
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=LEAD)
    assert step(NOW + 120 * S) == [(first.id, "escalation")]
    assert mailed(first)[-1] == LEAD and ONCALL not in mailed(first)
    configure(w.qa, is_fallback_to_email=False, escalation_recipients="")
    assert step(NOW + 121 * S) == []  # nobody to escalate to any more
    assert mailed(second) == [R1, R2] and events(second, "request.escalated") == []


def test_an_escalation_that_would_mail_only_recipients_mails_nobody(w):
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=f"{R2}, {R1.upper()}")
    req = create(w)
    assert step(NOW + 120 * S) == []
    assert mailed(req) == [R1, R2] and events(req, "request.escalated") == []


def test_removing_an_escalation_address_ends_its_links(w):
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=ONCALL)
    req = create(w)
    step(NOW + 120 * S)
    token = tokens(req)[ONCALL]
    configure(w.qa, is_fallback_to_email=False, escalation_recipients="")
    link = decisions.find_link(token)
    error = refused(lambda: decisions.decide_with_link(
        link=link, decision="allow", signed_in=w.users[ONCALL],
        actor=Actor.for_user(w.users[ONCALL], "192.0.2.7"), now=NOW + 130 * S))
    assert isinstance(error, ForbiddenError)
    assert reload(req).status == "pending"


def test_escalation_allows_count_towards_approvals_required(w):
    configure(w.qa, is_fallback_to_email=False, approvals_required=2,
              escalation_recipients=ONCALL)
    req = create(w)
    by_link(w, req, R1, now=NOW + S)
    db.session.commit()
    step(NOW + 120 * S)
    late = tokens(req)[R2]
    by_link(w, req, ONCALL, now=NOW + 121 * S)
    db.session.commit()
    req = reload(req)
    assert (req.status, req.decided_by, req.approvals_received) == ("approved", ONCALL, 2)
    link = decisions.find_link(late)
    assert isinstance(refused(lambda: decisions.decide_with_link(
        link=link, decision="allow", signed_in=w.users[R2], actor=CLI,
        now=NOW + 122 * S)), AlreadyDecidedError)


def test_a_technician_among_the_escalation_addresses_cannot_decide_their_own_request(w):
    configure(w.qa, is_fallback_to_email=False,
              escalation_recipients=f"{ONCALL}\n{w.tech.email}")
    req = create(w)
    step(NOW + 120 * S)
    link = decisions.find_link(tokens(req)[w.tech.email])
    error = refused(lambda: decisions.decide_with_link(
        link=link, decision="allow", signed_in=w.tech,
        actor=Actor.for_user(w.tech, "192.0.2.10"), now=NOW + 121 * S))
    assert isinstance(error, ForbiddenError) and error.message == decisions.OWN_REQUEST
    assert reload(req).status == "pending"


def test_changing_the_escalation_settings_reschedules_pending_requests(w):
    configure(w.qa, is_fallback_to_email=False)  # no escalation when the emails went out
    req = create(w)
    assert reload(req).chain_due_at is None
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=ONCALL,
              escalate_after_seconds=60)
    assert reload(req).chain_due_at == NOW + 60 * S  # from when the emails went out
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=ONCALL,
              escalate_after_seconds=90)
    assert reload(req).chain_due_at == NOW + 90 * S
    assert step(NOW + 90 * S) == [(req.id, "escalation")]
    assert events(req, "request.escalated")[0]["after_seconds"] == 90
    # Once escalated, a later change reschedules nothing.
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=LEAD,
              escalate_after_seconds=30)
    assert reload(req).chain_due_at is None
    assert step(NOW + 200 * S) == [] and LEAD not in mailed(req)


def test_emptying_escalate_to_unschedules_pending_requests(w):
    configure(w.qa, is_fallback_to_email=False, escalation_recipients=ONCALL)
    req = create(w)
    waiting = create(w, NOW + S)
    configure(w.qa, is_fallback_to_email=False, escalation_recipients="")
    assert reload(req).chain_due_at is None and reload(waiting).chain_due_at is None
    assert step(NOW + 500 * S) == []


def test_the_fallback_and_escalation_skip_an_approver_whose_allow_counted(w):
    configure(w.qa, approvals_required=2, escalation_recipients=f"{R1}\n{ONCALL}",
              escalate_after_seconds=30)
    req = create(w)
    # An approver allows in the portal while the approvers have not been mailed yet.
    decisions.decide_in_portal(user=w.users[R1], request_id=req.id, decision="allow",
                               actor=Actor.for_user(w.users[R1], "192.0.2.8"),
                               now=NOW + 5 * S)
    db.session.commit()
    assert reload(req).status == "pending"
    assert step(NOW + 60 * S) == [(req.id, "fallback")]
    assert mailed(req) == [R2]  # R1's Allow counted already: no email to them
    assert events(req, "request.fallback_mailed")[0]["recipients"] == [R2]
    assert step(NOW + 90 * S) == [(req.id, "escalation")]
    assert mailed(req) == [R2, ONCALL]


def test_one_failing_step_costs_only_its_own_request(w, monkeypatch):
    first, second = create(w), create(w)
    real = chain._fall_back

    def fails_for_the_first(req, **kwargs):
        if req.id == first.id:
            raise RuntimeError("template broke")
        return real(req, **kwargs)

    monkeypatch.setattr(chain, "_fall_back", fails_for_the_first)
    assert step(NOW + 60 * S) == [(second.id, "fallback")]
    assert mailed(first) == [] and sorted(mailed(second)) == [R1, R2]
    assert events(first, "request.fallback_mailed") == []
    # Tried again later, not in a loop.
    assert reload(first).chain_due_at == NOW + (60 + chain.RETRY_SECONDS) * S
    monkeypatch.setattr(chain, "_fall_back", real)
    assert step(NOW + 60 * S) == []
    assert step(NOW + (60 + chain.RETRY_SECONDS) * S) == [(first.id, "fallback")]
    assert sorted(mailed(first)) == [R1, R2]
