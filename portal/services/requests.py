"""Session requests: create (apply the policy), decide (first decision wins), cancel,
expire. Every check-then-change is one conditional UPDATE; its rowcount says who won."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import joinedload

from portal.domain import requests as rules
from portal.domain.requests import EmailCheck, EndUserCheck, Status
from portal.extensions import db
from portal.models import (
    ApprovalLink,
    Device,
    Exclusion,
    Membership,
    SessionRequest,
    User,
)
from portal.services import authz, crypto, mail
from portal.services.actors import SYSTEM, Actor
from portal.services.audit import record_event
from portal.services.errors import (
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    ServiceError,
)

MAX_RUN_AS = 256
MAX_REASON = 1000
DECIDER_ROLES = ("approver", "department_admin")


class DecisionError(ServiceError):
    """A refused decision: 409 already decided, 410 expired. An overdue request has just
    been marked timed out: that change is kept."""

    keeps_changes = True

    def __init__(self, refusal: rules.DecisionRefusedError) -> None:
        super().__init__(refusal.message)
        self.status = refusal.status
        self.code = refusal.code
        self.expired = isinstance(refusal, rules.ExpiredError)


def _audit(req: SessionRequest, action: str, actor: Actor, now: datetime, *,
           outcome: str = "success", **details) -> None:
    record_event(actor=actor, action=action, target_type="session_request", target_id=req.id,
                 department_id=req.department_id, now=now, outcome=outcome,
                 details={"request_id": req.id, "device": req.device.name, **details})


def _clean_text(value, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError({field: ["Must be text."]})
    value = value.strip()
    if not value:
        return None
    if len(value) > limit:
        raise InvalidInputError({field: [f"Keep it to {limit} characters."]})
    if field == "run_as" and not value.isprintable():
        raise InvalidInputError({field: ["Use printable characters only."]})
    if "\x00" in value:
        raise InvalidInputError({field: ["Contains a NUL character."]})
    return value


def _exclusion_reason(device: Device) -> str | None:
    conditions = [Exclusion.device_id == device.id]
    if device.group_id is not None:
        conditions.append(Exclusion.group_id == device.group_id)
    row = db.session.scalars(select(Exclusion).where(or_(*conditions)).limit(1)).first()
    if row is None:
        return None
    if row.device_id is not None:
        return "device excluded from session confirmation"
    return f"group “{device.group.name}” excluded from session confirmation"


def may_request(user: User, department_id: int) -> bool:
    return user.is_admin or "technician" in authz.roles_in(user, department_id)


def requestable_devices(user: User) -> list[Device]:
    """Devices a technician may ask for, by name."""
    query = select(Device).options(joinedload(Device.department)).order_by(Device.name)
    if not user.is_admin:
        query = query.where(Device.department_id.in_(
            select(Membership.department_id).where(Membership.user_id == user.id,
                                                   Membership.role == "technician")))
    return list(db.session.scalars(query))


def create_session_request(*, technician: User, device_name, run_as=None, reason=None,
                           actor: Actor, now: datetime, base_url: str) -> SessionRequest:
    if not isinstance(device_name, str) or not device_name.strip():
        raise InvalidInputError({"device": ["Name the device."]})
    if not device_name.strip().isprintable():  # e.g. a NUL, which PostgreSQL rejects
        raise InvalidInputError({"device": ["Use printable characters only."]})
    run_as = _clean_text(run_as, "run_as", MAX_RUN_AS)
    reason = _clean_text(reason, "reason", MAX_REASON)
    device = db.session.scalar(select(Device).where(Device.name == device_name.strip()))
    if device is None or not may_request(technician, device.department_id):
        raise NotFoundError("No such device in your departments.")
    settings = device.department.settings
    plan = rules.plan_request(
        rules.PolicyInput(
            is_confirmation_shown=settings.is_confirmation_shown,
            confirmation_timeout_seconds=settings.confirmation_timeout_seconds,
            is_shown_when_locked=settings.is_shown_when_locked,
            is_email_authorization_required=settings.is_email_authorization_required,
            email_authorization_timeout_seconds=settings.email_authorization_timeout_seconds,
            is_locked=device.is_locked,
            logged_in_user=device.logged_in_user,
            exclusion=_exclusion_reason(device),
        ),
        now,
    )
    req = SessionRequest(
        device=device, department_id=device.department_id, technician=technician,
        run_as=run_as, reason=reason, status=plan.status.value, created_at=now,
        expires_at=plan.expires_at, decided_at=plan.decided_at, decided_by=plan.decided_by,
        decision_reason=plan.decision_reason, end_user_check=plan.end_user.value,
        end_user_deadline=plan.end_user_deadline, email_check=plan.email.value,
        email_deadline=plan.email_deadline,
        prompt_message=settings.confirmation_message,
    )
    db.session.add(req)
    db.session.flush()
    _audit(req, "request.created", actor, now, technician=technician.email, run_as=run_as,
           reason=reason, end_user=plan.end_user.value, email=plan.email.value,
           expires_at=plan.expires_at.isoformat())
    if plan.status is Status.APPROVED:
        _audit(req, "request.decided", actor, now, status="approved",
               decided_by=plan.decided_by, decision_reason=plan.decision_reason)
    if plan.email is EmailCheck.PENDING:
        for recipient in settings.recipients:
            token = crypto.new_token()
            db.session.add(ApprovalLink(request_id=req.id, recipient_email=recipient,
                                        token_hash=crypto.keyed_hash(token), created_at=now))
            mail.queue_approval_email(req=req, recipient=recipient, token=token,
                                      base_url=base_url, now=now)
            _audit(req, "email.queued", actor, now, recipient=recipient)
        db.session.flush()
    return req


# --- reading -------------------------------------------------------------------------


def get_request(request_id: int) -> SessionRequest:
    req = db.session.get(SessionRequest, request_id)
    if req is None:
        raise NotFoundError("No such session request.")
    return req


def get_own_request(user: User, request_id: int) -> SessionRequest:
    """A technician sees only their own requests (404 for anybody else's)."""
    req = db.session.get(SessionRequest, request_id)
    if req is None or req.technician_id != user.id:
        raise NotFoundError("No such session request.")
    return req


def recent_requests(user: User, limit: int = 10) -> list[SessionRequest]:
    """The technician's own latest requests (one indexed query, device loaded)."""
    return list(db.session.scalars(
        select(SessionRequest).where(SessionRequest.technician_id == user.id)
        .options(joinedload(SessionRequest.device))
        .order_by(SessionRequest.created_at.desc(), SessionRequest.id.desc()).limit(limit)))


def reading(req: SessionRequest, now: datetime) -> rules.Reading:
    """How the request reads at `now` (see portal.domain.requests.read_request)."""
    return rules.read_request(
        status=req.status, expires_at=req.expires_at, end_user=req.end_user_check,
        email=req.email_check, end_user_deadline=req.end_user_deadline,
        email_deadline=req.email_deadline, decided_at=req.decided_at,
        decided_by=req.decided_by, now=now)


def read_status(request_id: int) -> tuple[str, datetime] | None:
    """(status, expires_at): the one cheap query a poll makes."""
    row = db.session.execute(
        select(SessionRequest.status, SessionRequest.expires_at)
        .where(SessionRequest.id == request_id)
    ).first()
    return (row.status, row.expires_at) if row else None


def may_decide(user: User, department_id: int) -> bool:
    if user.is_admin:
        return True
    return bool(authz.roles_in(user, department_id) & set(DECIDER_ROLES))


def decides_anywhere(user: User) -> bool:
    if user.is_admin:
        return True
    return db.session.scalar(
        select(Membership.id).where(Membership.user_id == user.id,
                                    Membership.role.in_(DECIDER_ROLES)).limit(1)) is not None


def pending_for(user: User, now: datetime, limit: int = 50
                ) -> tuple[list[SessionRequest], int]:
    """Open requests of the departments where the user decides; earliest deadline first.
    Returns (up to `limit` rows with device and technician loaded, total count)."""
    where = [SessionRequest.status == Status.PENDING.value, SessionRequest.expires_at > now]
    if not user.is_admin:
        where.append(SessionRequest.department_id.in_(
            select(Membership.department_id).where(Membership.user_id == user.id,
                                                   Membership.role.in_(DECIDER_ROLES))))
    rows = list(db.session.scalars(
        select(SessionRequest).where(*where)
        .options(joinedload(SessionRequest.device), joinedload(SessionRequest.technician),
                 joinedload(SessionRequest.department))
        .order_by(SessionRequest.expires_at, SessionRequest.id).limit(limit)))
    total = len(rows) if len(rows) < limit else db.session.scalar(
        select(func.count(SessionRequest.id)).where(*where))
    return rows, total


# --- deciding ------------------------------------------------------------------------


def _win(req: SessionRequest, now: datetime, values: dict, *,
         end_user: bool = False) -> bool:
    """The conditional transition out of pending. True when this call won."""
    stmt = (update(SessionRequest)
            .where(SessionRequest.id == req.id,
                   SessionRequest.status == Status.PENDING.value,
                   SessionRequest.expires_at > now)
            .values(decided_at=now, **values)
            .execution_options(synchronize_session=False))
    if end_user:
        stmt = stmt.where(SessionRequest.end_user_check == EndUserCheck.PENDING.value,
                          SessionRequest.end_user_deadline > now)
    won = db.session.execute(stmt).rowcount == 1
    db.session.expire(req)
    return won


def _refuse(req: SessionRequest, now: datetime, check_deadline: datetime | None = None):
    """After losing: mark an overdue request timed out (so it reads so at once) and raise
    409 or 410."""
    refusal = rules.refusal(req.status, req.expires_at, now, check_deadline)
    if refusal is None:  # lost to nobody: the end-user check was not open
        refusal = rules.AlreadyDecidedError("This prompt is closed.")
    if isinstance(refusal, rules.ExpiredError) and req.status == Status.PENDING.value \
            and now >= req.expires_at:
        expire_one(req, now)
    raise DecisionError(refusal)


def _after_decision(req: SessionRequest, actor: Actor, now: datetime, **details) -> None:
    mail.cancel_for_request(req.id)
    _audit(req, "request.decided", actor, now, status=req.status,
           decided_by=req.decided_by, **details)


def decide_by_end_user(*, device: Device, request_id: int, decision: str, actor: Actor,
                       now: datetime) -> SessionRequest:
    if decision not in ("accept", "decline"):
        raise InvalidInputError({"decision": ["Use “accept” or “decline”."]})
    req = db.session.get(SessionRequest, request_id)
    if req is None or req.device_id != device.id or \
            req.end_user_check == EndUserCheck.SKIPPED.value:
        raise NotFoundError("No such prompt on this device.")
    accept = decision == "accept"
    won = _win(req, now, {
        "status": (Status.APPROVED if accept else Status.DENIED).value,
        "decided_by": rules.DECIDED_BY_END_USER,
        "decision_reason": None,
        "end_user_check": (EndUserCheck.ACCEPTED if accept else EndUserCheck.DECLINED).value,
    }, end_user=True)
    if not won:
        _refuse(req, now, req.end_user_deadline)
    _after_decision(req, actor, now, check="end_user", decision=decision)
    return req


class SignInRequiredError(Exception):
    pass


def find_link(token: str) -> ApprovalLink:
    link = db.session.scalar(
        select(ApprovalLink).where(ApprovalLink.token_hash == crypto.keyed_hash(token))
        .options(joinedload(ApprovalLink.request)))
    if link is None:
        raise NotFoundError("This link is not valid.")
    return link


def decide_with_link(*, link: ApprovalLink, decision: str, signed_in: User | None,
                     comment=None, actor: Actor, now: datetime,
                     user_agent: str = "") -> SessionRequest:
    """A recipient's Allow / Deny from the email's link (found with find_link)."""
    allow, comment = _allow_or_deny(decision, comment)
    req = link.request
    if req.department.settings.is_sign_in_required_to_decide and signed_in is None:
        raise SignInRequiredError()
    if signed_in is not None and signed_in.email.lower() != link.recipient_email.lower():
        raise ForbiddenError("This link was sent to somebody else. Sign in as its recipient.")
    return _approver_decides(
        req, allow, decided_by=link.recipient_email, comment=comment, actor=actor,
        now=now, check_column="email_check",
        check_values=(EmailCheck.ALLOWED.value, EmailCheck.DENIED.value),
        check="email", recipient=link.recipient_email, user_agent=user_agent[:200])


def decide_in_portal(*, user: User, request_id: int, decision: str, actor: Actor,
                     now: datetime, comment=None, user_agent: str = "") -> SessionRequest:
    allow, comment = _allow_or_deny(decision, comment)
    req = get_request(request_id)
    if not may_decide(user, req.department_id):
        raise ForbiddenError("You can't decide requests of this department.")
    return _approver_decides(req, allow, decided_by=user.email, comment=comment,
                             actor=actor, now=now, check="portal",
                             user_agent=user_agent[:200])


def _allow_or_deny(decision: str, comment) -> tuple[bool, str | None]:
    if decision not in ("allow", "deny"):
        raise InvalidInputError({"decision": ["Use “allow” or “deny”."]})
    return decision == "allow", _clean_text(comment, "comment", MAX_REASON)


def _approver_decides(req: SessionRequest, allow: bool, *, decided_by: str, comment,
                      actor: Actor, now: datetime, check_column: str | None = None,
                      check_values: tuple[str, str] = ("", ""), **details) -> SessionRequest:
    """Allow or Deny by a person (a link's recipient or a portal approver): first wins."""
    values = {"status": (Status.APPROVED if allow else Status.DENIED).value,
              "decided_by": decided_by, "decision_reason": comment}
    if check_column:
        values[check_column] = check_values[0] if allow else check_values[1]
    if not _win(req, now, values):
        _refuse(req, now)
    _after_decision(req, actor, now, decision="allow" if allow else "deny", **details)
    return req


def cancel_request(*, user: User, request_id: int, actor: Actor, now: datetime
                   ) -> SessionRequest:
    req = get_own_request(user, request_id)
    if not _win(req, now, {"status": Status.CANCELLED.value}):
        _refuse(req, now)
    mail.cancel_for_request(req.id)
    _audit(req, "request.cancelled", actor, now)
    return req


# --- expiry --------------------------------------------------------------------------


def expire_one(req: SessionRequest, now: datetime) -> bool:
    won = db.session.execute(
        update(SessionRequest)
        .where(SessionRequest.id == req.id, SessionRequest.status == Status.PENDING.value,
               SessionRequest.expires_at <= now)
        .values(status=Status.TIMED_OUT.value, decided_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    db.session.expire(req)
    if won:
        mail.cancel_for_request(req.id)
        _audit(req, "request.timed_out", SYSTEM, now)
    return won


def expire_overdue(now: datetime) -> list[int]:
    """Move every overdue pending request to timed_out; one transition (and one audit
    event) per request however many sweeps run at once."""
    ids = list(db.session.scalars(
        update(SessionRequest)
        .where(SessionRequest.status == Status.PENDING.value, SessionRequest.expires_at <= now)
        .values(status=Status.TIMED_OUT.value, decided_at=now)
        .returning(SessionRequest.id)
        .execution_options(synchronize_session=False)
    ))
    for request_id in sorted(ids):
        req = db.session.get(SessionRequest, request_id)
        db.session.refresh(req)
        mail.cancel_for_request(request_id)
        _audit(req, "request.timed_out", SYSTEM, now)
    return ids

