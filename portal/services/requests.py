"""Session requests: create one (apply the policy, mail its approval links) and read them.
Deciding, cancelling and expiring are in portal.services.decisions."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import joinedload

from portal import notifier
from portal.domain import approvals as approval_rules
from portal.domain import chain as chain_rules
from portal.domain import preapproval as preapproval_rules
from portal.domain import requests as rules
from portal.domain.errors import InvalidInputError, NotFoundError
from portal.domain.requests import EmailCheck, Status
from portal.domain.permissions import Action
from portal.extensions import db
from portal.models import (
    ApiToken,
    ApprovalLink,
    Department,
    Device,
    DeviceGroup,
    Exclusion,
    SessionRequest,
    User,
)
from portal.services import accounts, approvals, authz, crypto, inserted, mail, preapprovals
from portal.services.actors import Actor
from portal.services.audit import record_event, record_events
from portal.unit_of_work import read_apart

MAX_RUN_AS = 256
MAX_REASON = 1000


def request_event(req: SessionRequest, action: str, actor: Actor, now: datetime, *,
                  outcome: str = "success", **details) -> dict:
    """An audit event about `req`, as record_event's (and record_events') arguments."""
    return {"actor": actor, "action": action, "target_type": "session_request",
            "target_id": req.id, "department_id": req.department_id, "now": now,
            "outcome": outcome,
            "details": {"request_id": req.id, "device": req.device.name, **details}}


def audit_request(req: SessionRequest, action: str, actor: Actor, now: datetime, *,
                  outcome: str = "success", **details) -> None:
    record_event(**request_event(req, action, actor, now, outcome=outcome, **details))


def clean_text(value, field: str, limit: int) -> str | None:
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


def _requested_device_query(technician_id):
    """The device by its name with what the policy reads about it, for the technician
    `technician_id` (a bound parameter, or the column of a token's user)."""
    is_device_excluded = (select(Exclusion.id).where(Exclusion.device_id == Device.id)
                          .exists())
    excluded_group = (select(DeviceGroup.name)
                      .join(Exclusion, Exclusion.group_id == DeviceGroup.id)
                      .where(DeviceGroup.id == Device.group_id)
                      .scalar_subquery())
    now = bindparam("now")
    return (select(Device, is_device_excluded, excluded_group,
                   approvals.cooldown_subquery(technician_id, now),
                   *preapprovals.live_columns(technician_id, now),
                   authz.may_column(technician_id, Action.REQUEST, Device.department_id))
            .options(joinedload(Device.department).joinedload(Department.settings)))


# Built once, with the name, the technician and the time as parameters: building it cost
# about a sixth of a create.
_REQUESTED_DEVICE = (_requested_device_query(bindparam("technician_id"))
                     .where(Device.name == bindparam("name")))
# The same with the technician found by a live user token (parameter "token_hash"),
# the token's row ahead of the device's columns: the API's create checks its token in
# the device's query instead of a query of its own. The device is outer-joined, so a
# live token naming no device still gives its row (a 404, not a 401).
_REQUESTER = (_requested_device_query(User.id)
              .add_columns(ApiToken.id, ApiToken.last_used_at)
              .add_columns(User).select_from(ApiToken)
              .join(User, User.id == ApiToken.user_id)
              .outerjoin(Device, Device.name == bindparam("name"))
              .where(*accounts.LIVE_TOKEN, User.is_enabled))

# What the policy reads about a requested device: the device, why it is excluded from
# session confirmation (or None), until when a report keeps the technician off it (or
# None), and the technician's live pre-approval on it as a decision reason (or None).
Found = tuple[Device, str | None, datetime | None, str | None]


def _found(technician: User, device: Device, device_excluded, group_name, cooldown_until,
           granted_by, until, has_role) -> Found | None:
    """A row of the device's query as what the policy reads; None when the technician
    may not ask for it."""
    if not authz.can_with(technician, Action.REQUEST, has_role):
        return None
    pre_approval = preapproval_rules.decision_reason(granted_by, until) \
        if granted_by is not None and until is not None else None
    if device_excluded:
        return (device, "device excluded from session confirmation", cooldown_until,
                pre_approval)
    if group_name is not None:
        return (device, f"group “{group_name}” excluded from session confirmation",
                cooldown_until, pre_approval)
    return device, None, cooldown_until, pre_approval


def _requested_device(name: str, technician: User, now: datetime) -> Found | None:
    """The device by name, if the technician may ask for it, with what the policy reads
    about it, in one query: its department's settings (eager), why it is excluded from
    session confirmation, if it is (its own exclusion, or its group's), until when a
    report keeps this technician off it, if one does, and this technician's live
    pre-approval on it, if any (as its decision reason)."""
    row = db.session.execute(_REQUESTED_DEVICE, {"name": name, "technician_id": technician.id,
                                                 "now": now}).first()
    return None if row is None else _found(technician, *row)


@dataclass(frozen=True)
class Requester:
    """A live user token's technician, the token's use, and what the policy reads about
    the device they named (None: no such device, or not theirs to ask for)."""
    technician: User
    token: accounts.TokenUse
    device: Found | None


def find_requester(token: str, device_name: str, now: datetime) -> Requester | None:
    """The technician of a live user token with the device they name, in one statement;
    None for a token unknown, revoked, of a device, or of a disabled user (as
    accounts.find_token_owner)."""
    row = db.session.execute(_REQUESTER, {"token_hash": crypto.keyed_hash(token),
                                          "name": device_name, "now": now}).first()
    if row is None:
        return None
    *device_row, token_id, last_used_at, technician = row
    return Requester(technician=technician, token=accounts.TokenUse(token_id, last_used_at),
                     device=None if device_row[0] is None else _found(technician, *device_row))


def checked_input(device_name, run_as, reason) -> tuple[str, str | None, str | None]:
    """A create's fields, checked (InvalidInputError, a 422) and cleaned: the device's
    name stripped, run_as and reason as clean_text leaves them."""
    if not isinstance(device_name, str) or not device_name.strip():
        raise InvalidInputError({"device": ["Name the device."]})
    if not device_name.strip().isprintable():  # e.g. a NUL, which PostgreSQL rejects
        raise InvalidInputError({"device": ["Use printable characters only."]})
    return (device_name.strip(), clean_text(run_as, "run_as", MAX_RUN_AS),
            clean_text(reason, "reason", MAX_REASON))


def requestable_devices(user: User) -> list[Device]:
    """Devices a technician may ask for, by name."""
    query = select(Device).options(joinedload(Device.department)).order_by(Device.name)
    departments = authz.department_ids_where(user, Action.REQUEST)
    if departments is not None:
        query = query.where(Device.department_id.in_(departments))
    return list(db.session.scalars(query))


def create_session_request(*, technician: User, device_name, run_as=None, reason=None,
                           actor: Actor, now: datetime, base_url: str,
                           user_agent: str = "") -> SessionRequest:
    """A new session request by the technician, the policy applied, its approvers mailed."""
    device_name, run_as, reason = checked_input(device_name, run_as, reason)
    return _create(technician, _requested_device(device_name, technician, now),
                   run_as=run_as, reason=reason, actor=actor, now=now, base_url=base_url,
                   user_agent=user_agent)


def create_for_requester(requester: Requester, *, run_as: str | None, reason: str | None,
                         actor: Actor, now: datetime, base_url: str,
                         user_agent: str = "") -> SessionRequest:
    """create_session_request for what find_requester read with the technician's token
    (the API), the device not looked up again; `run_as` and `reason` as checked_input
    returned them."""
    return _create(requester.technician, requester.device, run_as=run_as, reason=reason,
                   actor=actor, now=now, base_url=base_url, user_agent=user_agent)


def _create(technician: User, found: Found | None, *, run_as: str | None,
            reason: str | None, actor: Actor, now: datetime, base_url: str,
            user_agent: str) -> SessionRequest:
    if found is None:
        raise NotFoundError("No such device in your departments.")
    device, exclusion, cooldown_until, pre_approval = found
    settings = device.department.settings
    approvals.refuse_creation(device=device, technician=technician, reason=reason,
                              is_reason_required=settings.is_reason_required,
                              cooldown_until=cooldown_until, actor=actor, now=now,
                              user_agent=user_agent)
    plan = rules.plan_request(
        rules.PolicyInput(
            is_confirmation_shown=settings.is_confirmation_shown,
            confirmation_timeout_seconds=settings.confirmation_timeout_seconds,
            is_shown_when_locked=settings.is_shown_when_locked,
            is_email_authorization_required=settings.is_email_authorization_required,
            email_authorization_timeout_seconds=settings.email_authorization_timeout_seconds,
            is_locked=device.is_locked,
            logged_in_user=device.logged_in_user,
            exclusion=exclusion,
            pre_approval=pre_approval,
            is_fallback_to_email=settings.is_fallback_to_email,
        ),
        now,
    )
    values = dict(
        device_id=device.id, department_id=device.department_id,
        technician_id=technician.id, run_as=run_as, reason=reason,
        status=plan.status.value, created_at=now,
        expires_at=plan.expires_at, decided_at=plan.decided_at, decided_by=plan.decided_by,
        decision_reason=plan.decision_reason, end_user_check=plan.end_user.value,
        end_user_deadline=plan.end_user_deadline, email_check=plan.email.value,
        email_deadline=plan.email_deadline,
        prompt_message=settings.confirmation_message,
        approvals_required=settings.approvals_required,
    )
    if plan.status is Status.PENDING and settings.is_number_matching_required:
        values["match_number"], choices = approval_rules.new_match()
        values["match_choices"] = approval_rules.format_choices(choices)
    if plan.email is EmailCheck.PENDING:  # the approvers are asked now: escalation next
        values["chain_due_at"] = chain_rules.escalation_due(
            mailed_at=now, escalate_after_seconds=settings.escalate_after_seconds,
            escalation_addresses=settings.escalation_addresses, expires_at=plan.expires_at)
        if plan.is_fallback_now:
            values["fallback_mailed_at"] = now
    else:  # the fallback, when the email check waits for the end user's deadline
        values["chain_due_at"] = plan.fallback_due_at
    req = inserted.unsaved(SessionRequest, values, device=device,
                           department=device.department, technician=technician)
    # What needs no database first — the links' tokens and hashes, their emails rendered —
    # so that the writes (on SQLite, the time the database's write lock is held) are the
    # INSERTs back to back: the request (its id back at once, no flush: nobody can be
    # waiting on a request that did not exist), its links, their emails, then every
    # audit event.
    asking = Asking.of(req, settings.recipients, settings=settings, now=now,
                       base_url=base_url) if plan.email is EmailCheck.PENDING else None
    inserted.insert(req)
    asked = asking.write(req.id) if asking is not None else []
    events = [request_event(req, "request.created", actor, now, technician=technician.email,
                            run_as=run_as, reason=reason, end_user=plan.end_user.value,
                            email=plan.email.value, expires_at=plan.expires_at.isoformat())]
    if plan.status is Status.APPROVED:
        events.append(request_event(req, "request.decided", actor, now, status="approved",
                                    decided_by=plan.decided_by,
                                    decision_reason=plan.decision_reason))
    if plan.is_fallback_now:
        events.append(request_event(req, "request.fallback_mailed", actor, now,
                                    because=plan.end_user_skipped_because or "prompt skipped",
                                    recipients=asked))
    events += [request_event(req, "email.queued", actor, now, recipient=recipient)
               for recipient in asked]
    record_events(events)  # one INSERT, no objects to flush
    return req


# Core, not the ORM's bulk INSERT: no objects are involved, and its set-up cost more
# than the statement.
_INSERT_LINKS = insert(ApprovalLink.__table__)


@dataclass(frozen=True)
class Asking:
    """"Check Request" links for some addresses, made ready to write: their tokens'
    hashes (each link under today's sign-in rule) and their emails, rendered once."""
    links: list[dict]
    emails: list[dict]
    recipients: list[str]

    @classmethod
    def of(cls, req: SessionRequest, addresses: list[str], *, settings, now: datetime,
           base_url: str, is_escalation: bool = False) -> Asking:
        tokens = [(recipient, crypto.new_token()) for recipient in addresses]
        return cls(
            links=[{"recipient_email": recipient, "token_hash": crypto.keyed_hash(token),
                    "created_at": now,
                    "is_sign_in_required": settings.is_sign_in_required_to_decide}
                   for recipient, token in tokens],
            emails=mail.approval_emails(req=req, links=tokens, base_url=base_url, now=now,
                                        is_escalation=is_escalation),
            recipients=[recipient for recipient, _token in tokens])

    def write(self, request_id: int) -> list[str]:
        """The links in one INSERT, their emails in another; the addresses mailed."""
        if self.links:
            db.session.execute(_INSERT_LINKS, [{**link, "request_id": request_id}
                                               for link in self.links])
            mail.queue_emails(self.emails, request_id)
        return self.recipients


def ask_approvers(req: SessionRequest, addresses: list[str], *, settings, now: datetime,
                  base_url: str, is_escalation: bool = False) -> list[str]:
    """Mail `addresses` a "Check Request" link each (see Asking). The addresses mailed;
    the caller records them (audit_queued) after its own events."""
    return Asking.of(req, addresses, settings=settings, now=now, base_url=base_url,
                     is_escalation=is_escalation).write(req.id)


def audit_queued(req: SessionRequest, recipients: list[str], actor: Actor,
                 now: datetime) -> None:
    record_events([request_event(req, "email.queued", actor, now, recipient=recipient)
                   for recipient in recipients])


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
        decided_by=req.decided_by, now=now, is_reported=req.is_reported,
        tally=approval_tally(req), match_number=req.match_number,
        choices=approval_rules.parse_choices(req.match_choices),
        is_fallback_mailed=req.fallback_mailed_at is not None)


def approval_tally(req: SessionRequest) -> approval_rules.Tally:
    """"k of N approvals", from the request's row alone."""
    return approval_rules.Tally(req.approvals_required, req.approvals_received,
                                approval_rules.parse_approvers(req.approved_by))


DEADLINE_SLACK_SECONDS = 0.01


def wait_for_change(request_id: int, seen: Status, seconds: float,
                    clock: Callable[[], datetime]) -> None:
    """Hold until the request no longer reads as `seen` (or is gone), or `seconds` pass:
    a long-poll. One indexed single-row read at the start, then it sleeps on the process's
    notifier (portal.notifier) and reads again only when woken for this request — by a
    commit that changed it, or by the notifier's shared fallback check — or when the
    request's own deadline passes (so a timeout is answered on time, before any sweep).
    Each read takes a pooled connection for that read only, so a waiting request holds no
    connection; the caller hands its own session's connection back first
    (unit_of_work.release)."""
    query = (select(SessionRequest.status, SessionRequest.expires_at)
             .where(SessionRequest.id == request_id))
    give_up = time.monotonic() + seconds
    with notifier.watch_request(request_id) as watch:  # before the read: no change missed
        while True:
            rows = read_apart(query)
            row = rows[0] if rows else None
            if row is None or rules.effective_status(row.status, row.expires_at,
                                                     clock()) is not seen:
                return
            watch.expect(row.status)
            left = give_up - time.monotonic()
            until_due = (row.expires_at - clock()).total_seconds() + DEADLINE_SLACK_SECONDS
            if left <= 0:
                return
            if not watch.wait(min(left, until_due)) and left <= until_due:
                return  # the whole wait passed unchanged


def pending_for(user: User, now: datetime, limit: int = 50
                ) -> tuple[list[SessionRequest], int]:
    """Open requests of the departments where the user decides; earliest deadline first.
    Returns (up to `limit` rows with device and technician loaded, total count)."""
    where = [SessionRequest.status == Status.PENDING.value, SessionRequest.expires_at > now]
    departments = authz.department_ids_where(user, Action.DECIDE)
    if departments is not None:
        where.append(SessionRequest.department_id.in_(departments))
    rows = list(db.session.scalars(
        select(SessionRequest).where(*where)
        .options(joinedload(SessionRequest.device), joinedload(SessionRequest.technician),
                 joinedload(SessionRequest.department))
        .order_by(SessionRequest.expires_at, SessionRequest.id).limit(limit)))
    total = len(rows) if len(rows) < limit else db.session.scalar(
        select(func.count(SessionRequest.id)).where(*where))
    return rows, total
