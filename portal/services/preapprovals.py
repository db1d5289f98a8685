"""Pre-approvals on the data: granted with an Allow, read with the device at creation
(no statement of its own), listed and revoked by department admins on the device's page,
revoked by a report. Every revocation is one conditional UPDATE (still live), so of two
racing revokes one wins and the other gets 409."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from portal.domain import preapproval as rules
from portal.domain.errors import ConflictError, NotFoundError
from portal.domain.permissions import Action
from portal.extensions import db
from portal.models import Device, PreApproval, SessionRequest, User
from portal.services import authz
from portal.services.actors import Actor
from portal.services.audit import record_event

REVOKED_BY_REPORT = "report"


def offered_for(req: SessionRequest) -> tuple[int, ...]:
    """The windows Allow offers on this request now (its department's maximum today; the
    approvals it requires as fixed at creation)."""
    return rules.hours_offered(req.department.settings.preapproval_max_hours,
                               req.approvals_required)


def live_columns(technician_id: int, now: datetime):
    """Who granted the live pre-approval of `technician_id` on the device, and until
    when: two scalar subqueries correlated to Device, read with the device (the latest
    window first, so both name the same row)."""
    def latest(column):
        return (select(column)
                .where(PreApproval.technician_id == technician_id,
                       PreApproval.device_id == Device.id,
                       PreApproval.expires_at > now, PreApproval.revoked_at.is_(None))
                .order_by(PreApproval.expires_at.desc(), PreApproval.id.desc()).limit(1)
                .scalar_subquery())
    return latest(PreApproval.granted_by), latest(PreApproval.expires_at)


def grant(req: SessionRequest, *, granted_by: str, hours: int, actor: Actor,
          now: datetime) -> PreApproval:
    """The window picked with the Allow that approved `req`; audited as
    `preapproval.granted` on the request (its timeline shows it)."""
    window = PreApproval(department_id=req.department_id, device_id=req.device_id,
                         technician_id=req.technician_id, request_id=req.id,
                         granted_by=granted_by, granted_at=now,
                         expires_at=rules.window_end(now, hours))
    db.session.add(window)
    db.session.flush()
    record_event(actor=actor, action="preapproval.granted", target_type="session_request",
                 target_id=req.id, department_id=req.department_id, now=now,
                 details={"request_id": req.id, "device": req.device.name,
                          "technician": req.technician.email, "granted_by": granted_by,
                          "hours": hours, "until": rules.until_text(window.expires_at),
                          "pre_approval_id": window.id})
    return window


def live_on(device: Device, now: datetime) -> list[PreApproval]:
    """The device's live pre-approvals, soonest to end first, with their technicians."""
    return list(db.session.scalars(
        select(PreApproval)
        .where(PreApproval.device_id == device.id, PreApproval.expires_at > now,
               PreApproval.revoked_at.is_(None))
        .options(joinedload(PreApproval.technician))
        .order_by(PreApproval.expires_at, PreApproval.id)))


def get_on(device: Device, preapproval_id: int) -> PreApproval:
    window = db.session.get(PreApproval, preapproval_id)
    if window is None or window.device_id != device.id:
        raise NotFoundError("No such pre-approval on this device.")
    return window


def _revoked_event(window: PreApproval, device: Device, technician: str, by: str,
                   actor: Actor, now: datetime, **details) -> None:
    record_event(actor=actor, action="preapproval.revoked", target_type="device",
                 target_id=device.id, department_id=device.department_id, now=now,
                 details={"device": device.name, "technician": technician,
                          "granted_by": window.granted_by, "revoked_by": by,
                          "until": rules.until_text(window.expires_at),
                          "pre_approval_id": window.id, **details})


def revoke(*, user: User, device: Device, preapproval_id: int, actor: Actor,
           now: datetime) -> PreApproval:
    """"Revoke" on the device's page (department admins): 409 once it is revoked or
    expired."""
    authz.require(user, Action.MANAGE, device.department_id,
                  "Only department admins revoke pre-approvals.")
    window = get_on(device, preapproval_id)
    won = db.session.execute(
        update(PreApproval)
        .where(PreApproval.id == window.id, PreApproval.revoked_at.is_(None),
               PreApproval.expires_at > now)
        .values(revoked_at=now, revoked_by=user.email)
        .execution_options(synchronize_session=False)).rowcount == 1
    db.session.expire(window)
    if not won:
        raise ConflictError("This pre-approval was already revoked." if window.revoked_at
                            else "This pre-approval has already expired.")
    _revoked_event(window, device, window.technician.email, user.email, actor, now)
    return window


def revoke_after_report(req: SessionRequest, *, reported_by: str, actor: Actor,
                        now: datetime) -> list[int]:
    """A report ("I didn't expect this") revokes the technician's live pre-approvals on
    the device, each audited."""
    ids = list(db.session.scalars(
        update(PreApproval)
        .where(PreApproval.technician_id == req.technician_id,
               PreApproval.device_id == req.device_id, PreApproval.revoked_at.is_(None),
               PreApproval.expires_at > now)
        .values(revoked_at=now, revoked_by=REVOKED_BY_REPORT)
        .returning(PreApproval.id)
        .execution_options(synchronize_session=False)))
    for window in db.session.scalars(select(PreApproval).where(PreApproval.id.in_(ids))
                                     .order_by(PreApproval.id)) if ids else ():
        _revoked_event(window, req.device, req.technician.email, REVOKED_BY_REPORT, actor,
                       now, reported_by=reported_by, request_id=req.id)
    return ids
