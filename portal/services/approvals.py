"""Approvals that resist fatigue and fraud, on the data: the refusals at creation (a
cool-down after a report, a required reason), counting Allows towards "Approvals
required", a number that did not match, and "I didn't expect this" (the report, its
cool-down and the department admins' email).

"The deciding decision wins": every Allow is one conditional UPDATE of the request's row
(still pending, not expired, this person not counted yet) that adds the Allow to the
count and — when the count reaches N — moves the request to approved in the same
statement. The row lock serialises concurrent Allows on PostgreSQL (each UPDATE re-reads
the row another committed), so no Allow is lost or counted twice, and exactly one of them
makes the transition. The counted Allow is then inserted once per person (a unique
constraint backs that up)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, literal, null, select, update

from portal.domain import approvals as rules
from portal.domain.errors import AlreadyDecidedError, ReasonRequiredError, ReportedError
from portal.domain.requests import DECIDED_BY_END_USER, Status
from portal.extensions import db
from portal.models import (Device, Membership, RequestApproval, RequestReport,
                           SessionRequest, User)
from portal.models.types import UTCDateTime
from portal.services import mail, preapprovals
from portal.services.actors import Actor
from portal.services.audit import record_event
from portal.unit_of_work import keep_changes

ALREADY_ALLOWED = "You have already allowed this request; another approver has to as well."


# --- at creation ---------------------------------------------------------------------


def cooldown_subquery(technician_id: int, now: datetime):
    """Until when a report keeps `technician_id` off the device (a scalar subquery
    correlated to Device, read with the device: no statement of its own)."""
    return (select(RequestReport.cooldown_until)
            .where(RequestReport.technician_id == technician_id,
                   RequestReport.device_id == Device.id,
                   RequestReport.cooldown_until > now)
            .order_by(RequestReport.cooldown_until.desc()).limit(1)
            .scalar_subquery())


def refuse_creation(*, device: Device, technician: User, reason: str | None,
                    is_reason_required: bool, cooldown_until: datetime | None,
                    actor: Actor, now: datetime, user_agent: str = "") -> None:
    """Before exclusions are looked at: a cool-down → 429 `reported`, a required reason
    missing → 422 `reason_required`. Each refusal is an audit event that stays, with
    who, from which address (the actor) and which browser or console (`user_agent`)."""
    details = {"device": device.name, "technician": technician.email,
               "user_agent": user_agent[:200]}
    if cooldown_until is not None and cooldown_until > now:
        seconds = rules.retry_after(cooldown_until, now)
        until = cooldown_until.strftime("%Y-%m-%d %H:%M:%S UTC")
        _refusal_event("request.cooldown_refused", device, actor, now,
                       until=cooldown_until.isoformat(), retry_after=seconds, **details)
        raise ReportedError(
            f"Your last request to {device.name} was reported as unexpected: new requests "
            f"to it are refused until {until}.", seconds)
    try:
        rules.require_reason(reason, is_required=is_reason_required)
    except ReasonRequiredError:
        _refusal_event("request.reason_refused", device, actor, now,
                       reason=(reason or "")[:200], **details)
        raise


def _refusal_event(action: str, target: Device, actor: Actor, now: datetime,
                   **details) -> None:
    record_event(actor=actor, action=action, target_type="device", target_id=target.id,
                 department_id=target.department_id, now=now, outcome="failure",
                 details=details)
    keep_changes()


# --- counting Allows -----------------------------------------------------------------


def not_counted(email: str):
    """SQL: `email` has no counted Allow on the request (read from the request's own row,
    so a concurrent writer's committed change is re-read under the row lock)."""
    return ~(literal("\n") + SessionRequest.approved_by).contains(
        f"\n{email.lower()}\n", autoescape=True)


def has_counted(req: SessionRequest, email: str) -> bool:
    return rules.has_allowed(rules.Tally(req.approvals_required, req.approvals_received,
                                         rules.parse_approvers(req.approved_by)), email)


def count_allow(req: SessionRequest, *, who: str, user_id: int | None, comment: str | None,
                now: datetime, check_column: str | None) -> bool | None:
    """Count `who`'s Allow and, when it completes "Approvals required", approve — in one
    conditional UPDATE. True: the request is approved now; False: counted, still
    pending; None: nothing counted (decided, expired, or `who` counted already)."""
    email = who.lower()
    count = SessionRequest.approvals_received + 1
    reached = count >= SessionRequest.approvals_required

    def when_reached(value, column):
        return case((reached, value), else_=column)

    values = {
        "approvals_received": count,
        "approved_by": SessionRequest.approved_by + f"{email}\n",
        "status": when_reached(Status.APPROVED.value, SessionRequest.status),
        "decided_at": when_reached(literal(now, UTCDateTime()), SessionRequest.decided_at),
        "decided_by": when_reached(literal(who), SessionRequest.decided_by),
        "decision_reason": when_reached(literal(comment) if comment else null(),
                                        SessionRequest.decision_reason),
    }
    if check_column:
        column = getattr(SessionRequest, check_column)
        values[check_column] = when_reached("allowed", column)
    else:  # an approver in the portal: a check still waiting is not needed any more
        values["email_check"] = when_reached(waiting_skipped(), SessionRequest.email_check)
    values["chain_due_at"] = when_reached(null(), SessionRequest.chain_due_at)
    row = db.session.execute(
        update(SessionRequest)
        .where(SessionRequest.id == req.id, SessionRequest.status == Status.PENDING.value,
               SessionRequest.expires_at > now, not_counted(email))
        .values(**values)
        .returning(SessionRequest.id, SessionRequest.status)
        .execution_options(synchronize_session=False)).first()
    db.session.expire(req)
    if row is None:
        return None
    db.session.add(RequestApproval(request_id=req.id, approver_email=email,
                                   user_id=user_id, created_at=now))
    db.session.flush()
    return row.status == Status.APPROVED.value


def waiting_skipped():
    """SQL: the email check as a decision leaves it — "skipped" when it was still waiting
    for the end user's deadline (the approvers were never asked), else unchanged."""
    return case((SessionRequest.email_check == "waiting", "skipped"),
                else_=SessionRequest.email_check)


def refuse_counted(req: SessionRequest, email: str, now: datetime) -> None:
    """Someone whose Allow counted on a request still open may not Allow, Deny or report
    it again: 409."""
    if req.status == Status.PENDING.value and now < req.expires_at and \
            has_counted(req, email):
        raise AlreadyDecidedError(ALREADY_ALLOWED)


# --- "I didn't expect this" ----------------------------------------------------------


def record_report(req: SessionRequest, *, reported_by: str, minutes: int, actor: Actor,
                  now: datetime) -> RequestReport:
    """The report of a request just denied as unexpected: its cool-down, the revocation
    of that technician's pre-approvals on that device (each audited), and the email
    to every department admin (in the outbox, not tied to the request, so the request
    being over does not cancel it)."""
    report = RequestReport(
        request_id=req.id, department_id=req.department_id, device_id=req.device_id,
        technician_id=req.technician_id, reported_by=reported_by, reported_at=now,
        cooldown_until=rules.cooldown_until(now, minutes))
    db.session.add(report)
    preapprovals.revoke_after_report(req, reported_by=reported_by, actor=actor, now=now)
    who = rules.END_USER_REPORTER if reported_by == DECIDED_BY_END_USER else reported_by
    admins = db.session.scalars(
        select(User.email).join(Membership, Membership.user_id == User.id)
        .where(Membership.department_id == req.department_id,
               Membership.role == "department_admin", User.is_enabled.is_(True))
        .order_by(User.email)).all()
    subject = (f"Unexpected session request reported: {req.technician.email} "
               f"to {req.device.name}")
    context = {"req": req, "who": who, "reason": mail.one_line(req.reason),
               "until": report.cooldown_until.strftime("%Y-%m-%d %H:%M:%S UTC"),
               "minutes": minutes}
    for email in admins:
        mail.queue_message(recipient=email, subject=subject, template="request_reported",
                           context=context, department_id=req.department_id, now=now)
    db.session.flush()
    return report
