"""Ending a running remote session from the portal ("End session", design.md): an
approver or department admin asks for the end, the device's agent learns it on its next
prompts poll (`end_sessions`) and reports the end; "Ended by" is then the person who
asked, or "device" for a session the agent ended by itself.

One conditional UPDATE decides who asked first: of two presses (two people, or the same
one twice) exactly one is recorded, the other gets 409; an ended session gets 409 too."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from portal.domain import approvals as approval_rules
from portal.domain.errors import ConflictError, InvalidInputError, NotFoundError
from portal.domain.permissions import Action
from portal.extensions import db
from portal.models import Device, RemoteSession, SessionRequest, User
from portal.services import authz
from portal.services.actors import Actor
from portal.services.audit import record_event

NOT_ALLOWED = "Only approvers and department admins of this department end its sessions."
ALREADY_ENDED = "This session has already ended."
MAX_REASON = approval_rules.MAX_COMMENT


def clean_reason(value) -> str | None:
    """The optional reason: one line of at most 500 characters, checked like an
    approver's comment (portal.domain.approvals.clean_comment), on the field "reason"."""
    try:
        return approval_rules.clean_comment(value)
    except InvalidInputError as exc:
        messages = [m.replace("comment", "reason") for m in exc.field_errors["comment"]]
        raise InvalidInputError({"reason": messages}) from None


def session_to_end(*, user: User, department_id: int, session_id: int) -> RemoteSession:
    """A remote session of the department, with its request, technician and device, for
    someone who may end it (403 before 404)."""
    authz.require(user, Action.END_SESSION, department_id, NOT_ALLOWED)
    request = joinedload(RemoteSession.request)
    session = db.session.scalar(
        select(RemoteSession).join(SessionRequest,
                                   SessionRequest.id == RemoteSession.request_id)
        .where(RemoteSession.id == session_id,
               SessionRequest.department_id == department_id)
        .options(request.joinedload(SessionRequest.technician),
                 joinedload(RemoteSession.device)))
    if session is None:
        raise NotFoundError("No such remote session in this department.")
    return session


def end_pending_message(session: RemoteSession) -> str:
    at = session.end_requested_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"{session.end_requested_by} already asked to end this session at {at}; "
            f"the device ends it on its next poll.")


def request_end(*, user: User, department_id: int, session_id: int, reason, actor: Actor,
                now: datetime, user_agent: str = "") -> RemoteSession:
    """"End session": record who asked, when and why, once (409 for a second press or
    an ended session); audited as `session.end_requested`."""
    authz.require(user, Action.END_SESSION, department_id, NOT_ALLOWED)
    reason = clean_reason(reason)
    session = session_to_end(user=user, department_id=department_id, session_id=session_id)
    won = db.session.execute(
        update(RemoteSession)
        .where(RemoteSession.id == session.id, RemoteSession.ended_at.is_(None),
               RemoteSession.end_requested_at.is_(None))
        .values(end_requested_at=now, end_requested_by=user.email, end_reason=reason)
        .execution_options(synchronize_session=False)).rowcount == 1
    db.session.expire(session)
    if not won:
        raise ConflictError(ALREADY_ENDED if session.ended_at is not None
                            else end_pending_message(session))
    req = session.request
    record_event(actor=actor, action="session.end_requested", target_type="session_request",
                 target_id=req.id, department_id=req.department_id, now=now,
                 details={"request_id": req.id, "device": session.device.name,
                          "remote_session_id": session.id, "requested_by": user.email,
                          "reason": reason, "user_agent": user_agent[:200]})
    return session


def running_sessions_of(device: Device) -> list[RemoteSession]:
    """The device's running remote sessions (its page lists them), newest first, with
    their requests and technicians."""
    request = joinedload(RemoteSession.request)
    return list(db.session.scalars(
        select(RemoteSession)
        .where(RemoteSession.device_id == device.id, RemoteSession.ended_at.is_(None))
        .options(request.joinedload(SessionRequest.technician))
        .order_by(RemoteSession.started_at.desc(), RemoteSession.id.desc()).limit(50)))

