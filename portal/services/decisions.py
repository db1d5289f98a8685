"""Deciding session requests: the end user, a link's recipient, an approver in the portal;
cancelling; expiring. The first decision wins: every check-then-change is one conditional
UPDATE, and its rowcount says who won.

Lock order, everywhere: the request's row (or rows, in one statement, by id) first, then
its outbox rows, and audit events last — so two writers never wait on each other in
opposite orders.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm.attributes import set_committed_value

from portal.domain import approvals as approval_rules
from portal.domain import chain as chain_rules
from portal.domain import requests as rules
from portal.domain.errors import (
    AlreadyDecidedError,
    ExpiredError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    SignInRequiredError,
)
from portal.domain.permissions import Action
from portal.domain.requests import EmailCheck, EndUserCheck, Status
from portal.extensions import db
from portal.models import (ApprovalLink, Department, DepartmentSettings, Device,
                           OutboxMessage, SessionRequest, User)
from portal.domain import preapproval as preapproval_rules
from portal.services import (approvals, authz, crypto, mail, preapprovals, snapshots,
                             transitions)
from portal.services.actors import SYSTEM, Actor
from portal.services.audit import record_event, record_events
from portal.services.requests import audit_request, get_own_request, get_request
from portal.unit_of_work import keep_changes

OWN_REQUEST = "Nobody decides their own request: ask another approver."
QUEUED_MAIL = ("pending", "sending")  # the outbox statuses mail.cancel_for_requests cancels
LINK_ENDED = ("This link no longer works: its recipient is no longer among the "
              "department's approval recipients or escalation contacts.")


def _win(req: SessionRequest, now: datetime, values: dict, *,
         end_user: bool = False, not_counted: str | None = None) -> bool:
    """The conditional transition out of pending. True when this call won. With
    `not_counted` (an email), only while that person has no counted Allow on it."""
    stmt = (update(SessionRequest)
            .where(SessionRequest.id == req.id,
                   SessionRequest.status == Status.PENDING.value,
                   SessionRequest.expires_at > now)
            .values(decided_at=now, chain_due_at=None,
                    **{"email_check": approvals.waiting_skipped(), **values})
            .execution_options(synchronize_session=False))
    if end_user:
        stmt = stmt.where(SessionRequest.end_user_check == EndUserCheck.PENDING.value,
                          SessionRequest.end_user_deadline > now)
    if not_counted:
        stmt = stmt.where(approvals.not_counted(not_counted))
    won = db.session.execute(stmt).rowcount == 1
    db.session.expire(req)
    return won


def _refuse(req: SessionRequest, now: datetime, check_deadline: datetime | None = None):
    """After losing: mark an overdue request timed out (so it reads so at once, and that
    change is kept although the decision fails), then raise 409 or 410."""
    refusal = rules.refusal(req.status, req.expires_at, now, check_deadline)
    if refusal is None:  # lost to nobody: the end-user check was not open
        refusal = AlreadyDecidedError("This prompt is closed.")
    if isinstance(refusal, ExpiredError) and req.status == Status.PENDING.value \
            and now >= req.expires_at and expire_one(req, now):
        keep_changes()
    raise refusal


def _after_decision(req: SessionRequest, actor: Actor, now: datetime, **details) -> None:
    mail.cancel_for_request(req.id)
    audit_request(req, "request.decided", actor, now, status=req.status,
                  decided_by=req.decided_by, **details)


END_USER_DECISIONS = ("accept", "decline", "report")


def decide_by_end_user(*, device: Device, request_id: int, decision: str, actor: Actor,
                       now: datetime, number=None) -> SessionRequest:
    """The end user's answer at the device: accept (with the number, when matching is
    on; a wrong one denies), decline, or report ("I didn't expect this")."""
    if decision not in END_USER_DECISIONS:
        raise InvalidInputError({"decision": ["Use “accept”, “decline” or “report”."]})
    req = db.session.get(SessionRequest, request_id)
    if req is None or req.device_id != device.id or \
            req.end_user_check == EndUserCheck.SKIPPED.value:
        raise NotFoundError("No such prompt on this device.")
    matched = approval_rules.check_number(
        req.match_number, approval_rules.parse_choices(req.match_choices), number) \
        if decision == "accept" else None
    accept = decision == "accept" and matched is not False
    values = {
        "status": (Status.APPROVED if accept else Status.DENIED).value,
        "decided_by": rules.DECIDED_BY_END_USER,
        "decision_reason": approval_rules.mismatch_reason(approval_rules.parse_number(number))
        if matched is False else None,
        "end_user_check": (EndUserCheck.ACCEPTED if accept else EndUserCheck.DECLINED).value,
    }
    if decision == "report":
        values["is_reported"] = True
    if not _win(req, now, values, end_user=True):
        _refuse(req, now, req.end_user_deadline)
    if matched is False:
        audit_request(req, "request.number_mismatch", actor, now, check="end_user",
                      number=approval_rules.parse_number(number))
    if decision == "report":
        _reported(req, rules.DECIDED_BY_END_USER, actor, now, check="end_user")
    _after_decision(req, actor, now, check="end_user", decision=decision)
    return req


def _reported(req: SessionRequest, reported_by: str, actor: Actor, now: datetime,
              **details) -> None:
    minutes = req.department.settings.report_cooldown_minutes
    report = approvals.record_report(req, reported_by=reported_by, minutes=minutes,
                                     actor=actor, now=now)
    audit_request(req, "request.reported", actor, now, reported_by=reported_by,
                  technician=req.technician.email,
                  cooldown_until=report.cooldown_until.isoformat(), **details)


# --- approval links ------------------------------------------------------------------


def _link_query(*columns):
    """The link by its token's hash (a bound parameter) with its session request's row and
    the rows the request's page reads. Outer joins: an OTP access request's link has no
    session request."""
    return (select(*columns)
            .select_from(ApprovalLink)
            .outerjoin(SessionRequest, ApprovalLink.request_id == SessionRequest.id)
            .outerjoin(Device, SessionRequest.device_id == Device.id)
            .outerjoin(User, SessionRequest.technician_id == User.id)
            .outerjoin(Department, SessionRequest.department_id == Department.id)
            .outerjoin(DepartmentSettings, DepartmentSettings.department_id == Department.id)
            .where(ApprovalLink.token_hash == bindparam("token_hash")))


_LINKED = (ApprovalLink, SessionRequest, Device, User, Department, DepartmentSettings)
# Built once, with the token's hash as a parameter: building the statement cost about as
# much as running it, on a page every approver's phone opens. The six rows come as six
# entities of one row, not as joined eager loads: SQLAlchemy sets up a joined load's
# row processing anew on every execution, a third of this path's time; the relationships
# are then filled in by hand (set_committed_value, as a load would, no change recorded).
_LINK = _link_query(*_LINKED)
_LINK_SHAPE = snapshots.RowShape(*_LINKED)
_LINK_ROW = _link_query(*_LINK_SHAPE.columns)


def _related(link, req, device, technician, department, settings, relate) -> None:
    if link.request_id is not None:
        relate(link, "request", req)
        relate(req, "device", device)
        relate(req, "technician", technician)
        relate(req, "department", department)
        relate(department, "settings", settings)


def find_link(token: str) -> ApprovalLink:
    """The link with everything its page and its decision read about a session request
    (the request, its device, technician, department and settings), in one query."""
    row = db.session.execute(_LINK, {"token_hash": crypto.keyed_hash(token)}).first()
    if row is None:
        raise NotFoundError("This link is not valid.")
    _related(*row, set_committed_value)
    return row[0]


def read_link(token: str):
    """For showing only: find_link's link and rows as read-only snapshots
    (portal.services.snapshots), for a session request's link. The page's hot path — a
    link opened before, and its status poll — reads this one row and nothing else. An
    OTP access request's link comes as find_link's (its request is not in this row)."""
    found = snapshots.read_one(_LINK_SHAPE, _LINK_ROW,
                               {"token_hash": crypto.keyed_hash(token)})
    if found is None:
        raise NotFoundError("This link is not valid.")
    if found[0].otp_request_id is not None:
        return find_link(token)
    _related(*found, snapshots.relate)
    return found[0]


def is_link_current(link: ApprovalLink) -> bool:
    """A link works only while its recipient is still one of the department's Recipient(s)
    or "Escalate to" addresses."""
    settings = link.request.department.settings
    return chain_rules.is_current_recipient(link.recipient_email, settings.recipients,
                                            settings.escalation_addresses)


def is_sign_in_required(link: ApprovalLink) -> bool:
    """The stricter of the rule the link was mailed with and today's setting: turning
    "Approvers must sign in to decide" off never loosens a link already sent."""
    return link.is_sign_in_required or \
        link.request.department.settings.is_sign_in_required_to_decide


def is_own_request(req: SessionRequest, user: User | None = None,
                   email: str | None = None) -> bool:
    """Whether `user` (or the holder of `email`) is the request's technician."""
    if user is not None and user.id == req.technician_id:
        return True
    return email is not None and email.lower() == req.technician.email.lower()


def check_link_holder(link: ApprovalLink, signed_in: User | None, *,
                      is_current: bool) -> None:
    """The rules every approval link decides under, whatever its request: it still
    works (`is_current`: its recipient is still one), under the stricter sign-in rule,
    and only for its own recipient."""
    if not is_current:
        raise ForbiddenError(LINK_ENDED)
    if is_sign_in_required(link) and signed_in is None:
        raise SignInRequiredError("Sign in as the link's recipient to decide.")
    if signed_in is not None and signed_in.email.lower() != link.recipient_email.lower():
        raise ForbiddenError("This link was sent to somebody else. Sign in as its recipient.")


def record_link_opened(*, link: ApprovalLink, actor: Actor, now: datetime,
                       user_agent: str = "") -> bool:
    """The first GET of a link is recorded once ("link opened"); later GETs — which anyone
    holding the link can repeat forever — write nothing, not even an UPDATE that matches
    no row (on SQLite that alone takes the write lock). True for the first opening. The
    link as find_link or read_link gives it: only its columns and its request's are read."""
    if link.first_opened_at is not None:  # as read with the link: opened before
        return False
    first = db.session.execute(
        update(ApprovalLink)
        .where(ApprovalLink.id == link.id, ApprovalLink.first_opened_at.is_(None))
        .values(first_opened_at=now)
        .execution_options(synchronize_session=False)).rowcount == 1
    if first:
        details = {"recipient": link.recipient_email, "user_agent": user_agent[:200]}
        if link.request is not None:
            audit_request(link.request, "link.opened", actor, now, **details)
        else:  # an OTP access request's link
            ask = link.otp_request
            record_event(actor=actor, action="link.opened", target_type="otp_request",
                         target_id=ask.id, department_id=ask.department_id, now=now,
                         details={"otp_request_id": ask.id, **details})
    return first


def decide_with_link(*, link: ApprovalLink, decision: str, signed_in: User | None,
                     comment=None, number=None, preapproval_hours=None, actor: Actor,
                     now: datetime, user_agent: str = "") -> SessionRequest:
    """A recipient's Allow / Deny / report from the email's link (found with find_link)."""
    comment = _check_decision(decision, comment)
    req = link.request
    check_link_holder(link, signed_in, is_current=is_link_current(link))
    if is_own_request(req, signed_in, link.recipient_email):
        raise ForbiddenError(OWN_REQUEST)
    return _approver_decides(
        req, decision, decided_by=link.recipient_email, user_id=signed_in.id if signed_in
        else None, comment=comment, number=number, preapproval_hours=preapproval_hours,
        actor=actor, now=now,
        check_column="email_check", check="email", recipient=link.recipient_email,
        user_agent=user_agent[:200])


def decide_in_portal(*, user: User, request_id: int, decision: str, actor: Actor,
                     now: datetime, comment=None, number=None, preapproval_hours=None,
                     user_agent: str = "") -> SessionRequest:
    comment = _check_decision(decision, comment)
    req = get_request(request_id)
    authz.require(user, Action.DECIDE, req.department_id,
                  "You can't decide requests of this department.")
    if is_own_request(req, user):
        raise ForbiddenError(OWN_REQUEST)
    return _approver_decides(req, decision, decided_by=user.email, user_id=user.id,
                             comment=comment, number=number,
                             preapproval_hours=preapproval_hours, actor=actor, now=now,
                             check="portal", user_agent=user_agent[:200])


APPROVER_DECISIONS = ("allow", "deny", "report")


def _check_decision(decision: str, comment) -> str | None:
    if decision not in APPROVER_DECISIONS:
        raise InvalidInputError({"decision": ["Use “allow”, “deny” or “report”."]})
    return approval_rules.clean_comment(comment)


def _approver_decides(req: SessionRequest, decision: str, *, decided_by: str,
                      user_id: int | None, comment: str | None, number, actor: Actor,
                      now: datetime, check_column: str | None = None,
                      preapproval_hours=None, **details) -> SessionRequest:
    """Allow, Deny or report by a person (a link's recipient or a portal approver). An
    Allow is counted towards "Approvals required" (approvals.count_allow); the Allow that
    completes the count, a Deny, a wrong number or a report decides. An Allow that
    approves may also grant a pre-approval window (`preapproval_hours`)."""
    hours = preapproval_rules.parse_hours(preapproval_hours, preapprovals.offered_for(req)) \
        if decision == "allow" else None  # 422 before anything changes
    matched = approval_rules.check_number(
        req.match_number, approval_rules.parse_choices(req.match_choices), number) \
        if decision == "allow" else None  # 422 before anything is looked at
    approvals.refuse_counted(req, decided_by, now)
    if decision == "allow" and matched is not False:
        _count_allow(req, decided_by=decided_by, user_id=user_id, comment=comment,
                     actor=actor, now=now, check_column=check_column, **details)
        if hours and req.status == Status.APPROVED.value:
            preapprovals.grant(req, granted_by=decided_by, hours=hours, actor=actor,
                               now=now)
        return req
    values = {"status": Status.DENIED.value, "decided_by": decided_by,
              "decision_reason": comment}
    if matched is False:
        values["decision_reason"] = approval_rules.mismatch_reason(approval_rules.parse_number(number)) + (
            f" {comment}" if comment else "")
    if decision == "report":
        values["is_reported"] = True
    if check_column:
        values[check_column] = EmailCheck.DENIED.value
    if not _win(req, now, values, not_counted=decided_by):
        approvals.refuse_counted(req, decided_by, now)
        _refuse(req, now)
    if matched is False:
        audit_request(req, "request.number_mismatch", actor, now, number=approval_rules.parse_number(number),
                      **details)
    if decision == "report":
        _reported(req, decided_by, actor, now, **details)
    _after_decision(req, actor, now, decision=decision, **details)
    return req


def _count_allow(req: SessionRequest, *, decided_by: str, user_id: int | None,
                 comment: str | None, actor: Actor, now: datetime,
                 check_column: str | None, **details) -> SessionRequest:
    required = req.approvals_required
    approved = approvals.count_allow(req, who=decided_by, user_id=user_id, comment=comment,
                                     now=now, check_column=check_column)
    if approved is None:
        approvals.refuse_counted(req, decided_by, now)
        _refuse(req, now)
    if required > 1:
        audit_request(req, "approval.counted", actor, now, approver=decided_by,
                      received=req.approvals_received, required=required,
                      comment=comment, **details)
    if approved:
        _after_decision(req, actor, now, decision="allow", **details)
    return req


def cancel_request(*, user: User, request_id: int, actor: Actor, now: datetime
                   ) -> SessionRequest:
    req = get_own_request(user, request_id)
    if not _win(req, now, {"status": Status.CANCELLED.value}):
        _refuse(req, now)
    mail.cancel_for_request(req.id)
    audit_request(req, "request.cancelled", actor, now)
    return req


# --- expiry --------------------------------------------------------------------------


def expire_one(req: SessionRequest, now: datetime) -> bool:
    won = transitions.time_out_one(SessionRequest, req.id, now)
    db.session.expire(req)
    if won:
        mail.cancel_for_request(req.id)
        audit_request(req, "request.timed_out", SYSTEM, now)
    return won


def expire_overdue(now: datetime, limit: int | None = None) -> list[int]:
    """Move overdue pending requests (the `limit` earliest due, or all) to timed_out; one
    transition (and one audit event) per request however many sweeps run at once
    (transitions.time_out_due). The requests are locked before their mail, and the audit
    events come last. Only the columns the events need are read."""
    moved = transitions.time_out_due(SessionRequest, now, limit, SessionRequest.department_id,
                                     SessionRequest.device_id)
    if not moved:
        return []
    ids = [row.id for row in moved]
    # Only mail still queued needs cancelling: a sent, failed or cancelled message was
    # redacted when it left the queue, so loading it (bodies and all) would change nothing.
    queued = sorted(set(db.session.scalars(
        select(OutboxMessage.request_id).where(OutboxMessage.request_id.in_(ids),
                                               OutboxMessage.status.in_(QUEUED_MAIL)))))
    if queued:
        mail.cancel_for_requests(queued)
    names = dict(db.session.execute(select(Device.id, Device.name).where(
        Device.id.in_(sorted({row.device_id for row in moved})))).all())
    # The details audit_request writes, without loading each request; one bulk insert.
    record_events([{"actor": SYSTEM, "action": "request.timed_out",
                    "target_type": "session_request", "target_id": row.id,
                    "department_id": row.department_id, "now": now,
                    "details": {"request_id": row.id, "device": names[row.device_id]}}
                   for row in moved])
    return ids
