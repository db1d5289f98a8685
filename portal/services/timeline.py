"""The timeline of one session request or one OTP access request: every audit event about
it, oldest first (requested, prompt shown, emails queued / sent / failed, link opened,
decided — by whom, from which IP and browser —, timed out, session started / ended), and
each recipient's email delivery from the outbox. Nothing secret is read: no email body
(it holds the link), no token, no code.

Readers of a department's session logs read every timeline of it; a technician only the
timelines of their own session requests (404 for the others)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import joinedload

from portal.domain import otp as otp_rules
from portal.domain.errors import ForbiddenError, NotFoundError
from portal.domain.log_filters import approved_by_label
from portal.domain.permissions import Action, may
from portal.domain.requests import STATUS_LABELS
from portal.extensions import db
from portal.models import (
    AuditEvent,
    ClientSession,
    OneTimePassword,
    OtpAccessRequest,
    OutboxMessage,
    RemoteSession,
    SessionRequest,
)
from portal.services.session_logs import reads_logs, roles_of

MAX_BROWSER = 200

LABELS = {
    "request.created": "Requested",
    "otp.access_requested": "Requested",
    "prompt.shown": "Prompt shown at the device",
    "email.queued": "Email queued",
    "email.sent": "Email sent",
    "email.failed": "Email failed",
    "link.opened": "Link opened",
    "approval.counted": "Allow counted",
    "request.number_mismatch": "Wrong number picked",
    "request.reported": "Reported as unexpected",
    "request.fallback_mailed": "Asking the approvers (nobody answered at the device)",
    "request.escalated": "Escalated",
    "request.decided": "Decided",
    "otp.approved": "Decided",
    "otp.denied": "Decided",
    "request.cancelled": "Cancelled",
    "request.timed_out": "Timed out",
    "otp.timed_out": "Timed out",
    "preapproval.granted": "Pre-approval granted",
    "preapproval.revoked": "Pre-approval revoked",
    "session.started": "Session started",
    "session.end_requested": "End of session requested",
    "session.ended": "Session ended",
    "client_session.started": "Client session started",
    "client_session.ended": "Client session ended",
}


def one_line(value: Any, limit: int = MAX_BROWSER) -> str:
    """Recorded text on one line of the page, cut to a sane length."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value or ""))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True)
class Entry:
    occurred_at: datetime
    action: str
    label: str
    note: str
    actor: str
    client_ip: str
    browser: str
    outcome: str


@dataclass(frozen=True)
class Delivery:
    recipient: str
    what: str        # "approval request", "one-time password"
    state: str       # queued | sent | failed | cancelled
    attempts: int
    error: str
    queued_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class Timeline:
    kind: str        # "session_request" | "otp_request"
    subject: Any     # the SessionRequest or the OtpAccessRequest
    entries: list[Entry]
    deliveries: list[Delivery]
    remote_session: RemoteSession | None = None
    client_sessions: tuple[ClientSession, ...] = ()


def _note(event: AuditEvent) -> str:
    d = event.details or {}
    action = event.action
    if action == "request.created":
        parts = [f"by {d.get('technician') or event.actor}"]
        if d.get("run_as"):
            parts.append(f"as {d['run_as']}")
        if d.get("reason"):
            parts.append(f"— reason: {d['reason']}")
        return one_line(" ".join(parts), 600)
    if action == "otp.access_requested":
        return one_line(f"for {d.get('username')} ({d.get('email')})"
                        + (", emergency access" if d.get("emergency") else ""), 600)
    if action.startswith("email."):
        note = f"to {d.get('recipient', '')}"
        if d.get("error"):
            note += f" — {d['error']}"
        return one_line(note, 600)
    if action == "link.opened":
        return one_line(f"{d.get('recipient', '')}’s link", 600)
    if action == "request.decided":
        status = d.get("status")
        note = STATUS_LABELS.get(status, status or "") if isinstance(status, str) else ""
        if d.get("decided_by"):
            note += f" by {approved_by_label(d['decided_by'])}"
        if d.get("check"):
            note += f" ({'at the device' if d['check'] == 'end_user' else d['check']})"
        if d.get("decision_reason"):
            note += f" — {d['decision_reason']}"
        return one_line(note, 600)
    if action == "approval.counted":
        note = (f"{d.get('received')} of {d.get('required')} approvals"
                f" — by {d.get('approver') or event.actor}")
        if d.get("comment"):
            note += f" — {d['comment']}"
        return one_line(note, 600)
    if action == "request.number_mismatch":
        where = " at the device" if d.get("check") == "end_user" else ""
        return one_line(f"{d.get('number')} picked{where}; the request is denied", 600)
    if action == "request.reported":
        return one_line(f"by {approved_by_label(d.get('reported_by') or event.actor)}; new "
                        f"requests of {d.get('technician', '')} to this device refused until "
                        f"{d.get('cooldown_until', '')}", 600)
    if action in ("request.fallback_mailed", "request.escalated"):
        note = "to " + ", ".join(d.get("recipients") or []) if d.get("recipients") \
            else "nobody: no Recipient(s) are set"
        if action == "request.fallback_mailed" and d.get("because"):
            note += f" — {d['because']}"
        if action == "request.escalated" and d.get("after_seconds"):
            note += f" — still pending after {d['after_seconds']} s"
        return one_line(note, 600)
    if action in ("otp.approved", "otp.denied"):
        note = ("Approved" if action == "otp.approved" else "Denied") + \
            f" by {d.get('decided_by', event.actor)}"
        if d.get("comment"):
            note += f" — {d['comment']}"
        return one_line(note, 600)
    if action.startswith("client_session."):
        return one_line(d.get("user_name", ""), 600)
    if action == "session.end_requested":
        note = (f"by {d.get('requested_by') or event.actor} — remote session "
                f"#{d.get('remote_session_id')}")
        if d.get("reason"):
            note += f" — reason: {d['reason']}"
        return one_line(note, 600)
    if action == "preapproval.granted":
        return one_line(f"by {d.get('granted_by') or event.actor}: {d.get('technician', '')} "
                        f"on this device until {d.get('until', '')}", 600)
    if action.startswith("session."):
        note = f"remote session #{d['remote_session_id']}" if d.get("remote_session_id") \
            else ""
        if d.get("ended_by"):
            note += f" — ended by {d['ended_by']}"
        return one_line(note, 600)
    return ""


def _entry(event: AuditEvent) -> Entry:
    details = event.details or {}
    return Entry(occurred_at=event.occurred_at, action=event.action,
                 label=LABELS.get(event.action, event.action), note=_note(event),
                 actor=event.actor, client_ip=event.client_ip,
                 browser=one_line(details.get("user_agent", "")), outcome=event.outcome)


def _delivery(message: OutboxMessage) -> Delivery:
    state = {"pending": "queued", "sending": "queued"}.get(message.status, message.status)
    # Where a one-time password went is shown masked, as everywhere else.
    recipient = (otp_rules.mask_email(message.recipient) if message.otp_id
                 else message.recipient)
    return Delivery(recipient=recipient,
                    what="one-time password" if message.otp_id else "approval request",
                    state=state, attempts=message.attempts,
                    error=one_line(message.last_error, 600), queued_at=message.created_at,
                    sent_at=message.sent_at)


def _events(department_id: int, *targets) -> list[Entry]:
    conditions = [and_(AuditEvent.target_type == kind, AuditEvent.target_id.in_(ids))
                  for kind, ids in targets if ids]
    events = db.session.scalars(
        select(AuditEvent).where(AuditEvent.department_id == department_id, or_(*conditions))
        .order_by(AuditEvent.occurred_at, AuditEvent.seq))
    return [_entry(event) for event in events]


def _outbox(*where) -> list[Delivery]:
    return [_delivery(m) for m in db.session.scalars(
        select(OutboxMessage).where(*where).order_by(OutboxMessage.id))]


def may_read_request_timeline(user, req: SessionRequest) -> bool:
    """Whether `user` opens this session request's timeline (the rule
    session_request_timeline enforces): a reader of its department's session logs, or its
    own technician while they may ask for sessions there."""
    roles = roles_of(user, req.department_id)
    return reads_logs(roles) or (may(roles, Action.REQUEST) and req.technician_id == user.id)


def session_request_timeline(*, user, department_id: int, request_id: int) -> Timeline:
    roles = roles_of(user, department_id)
    is_reader = reads_logs(roles)
    if not is_reader and not may(roles, Action.REQUEST):
        raise ForbiddenError("You do not have access to this department's sessions.")
    req = db.session.scalar(
        select(SessionRequest)
        .where(SessionRequest.id == request_id, SessionRequest.department_id == department_id)
        .options(joinedload(SessionRequest.device), joinedload(SessionRequest.technician),
                 joinedload(SessionRequest.department)))
    if req is None or (not is_reader and req.technician_id != user.id):
        raise NotFoundError("No such session request.")
    return Timeline(
        kind="session_request", subject=req,
        entries=_events(department_id, ("session_request", [str(req.id)])),
        deliveries=_outbox(OutboxMessage.request_id == req.id),
        remote_session=db.session.scalar(
            select(RemoteSession).where(RemoteSession.request_id == req.id)))


def otp_request_timeline(*, user, department_id: int, request_id: int) -> Timeline:
    """The request, and what followed an approval: the code's email and the client
    sessions it opened."""
    if not reads_logs(roles_of(user, department_id)):
        raise ForbiddenError("You do not have access to this department's sessions.")
    ask = db.session.scalar(
        select(OtpAccessRequest)
        .where(OtpAccessRequest.id == request_id,
               OtpAccessRequest.department_id == department_id)
        .options(joinedload(OtpAccessRequest.device),
                 joinedload(OtpAccessRequest.department)))
    if ask is None:
        raise NotFoundError("No such one-time password request.")
    codes = select(OneTimePassword.id).where(OneTimePassword.access_request_id == ask.id)
    sessions = tuple(db.session.scalars(
        select(ClientSession).where(ClientSession.otp_id.in_(codes))
        .order_by(ClientSession.started_at, ClientSession.id)))
    return Timeline(
        kind="otp_request", subject=ask,
        entries=_events(department_id, ("otp_request", [str(ask.id)]),
                        ("client_session", [str(s.id) for s in sessions])),
        deliveries=_outbox(or_(OutboxMessage.otp_request_id == ask.id,
                               OutboxMessage.otp_id.in_(codes))),
        client_sessions=sessions)
