"""A device's "Request One-Time Password", routed as design.md's table says (directory,
internal user, or an OTP access request to the department's approvers), and the
deciding of OTP access requests: first decision wins (one conditional UPDATE), 409 after
it, 410 after it expires; Approve emails the code."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from portal.domain import otp as rules
from portal.domain.errors import (
    AlreadyDecidedError,
    ExpiredError,
    ForbiddenError,
    InvalidCredentialsError,
    InvalidInputError,
    NotFoundError,
    ThrottledError,
    TooSoonError,
)
from portal.domain.otp import AccessStatus, Issuer, Route
from portal.domain.permissions import Action, roles_allowed
from portal.extensions import db
from portal.models import ApprovalLink, Device, Membership, OtpAccessRequest, User
from portal.services import accounts, authz, crypto, directory, mail, transitions
from portal.services.actors import SYSTEM, Actor
from portal.services.audit import record_events
from portal.services.decisions import OWN_REQUEST, check_link_holder
from portal.services.otp import (
    audit_otp,
    clean_email,
    clean_username,
    resend_if_valid,
    send_code,
    settings_of,
)
from portal.services.requests import MAX_REASON, clean_text
from portal.unit_of_work import keep_changes

INVALID_CREDENTIALS = "The login or the password is wrong."


@dataclass(frozen=True)
class Answer:
    """What the device is told (design.md: 202 sent, or 202 awaiting_approval)."""

    status: str                    # "sent" | "awaiting_approval"
    expires_at: datetime
    sent_to: str | None = None     # masked
    request_id: int | None = None


def request_otp(*, device: Device, username, email=None, emergency=False, login=None,
                password=None, actor: Actor, now: datetime, base_url: str) -> Answer:
    """A device's "Request One-Time Password"."""
    username = clean_username(username)
    if not isinstance(emergency, bool):
        raise InvalidInputError({"emergency": ["Must be true or false."]})
    settings = settings_of(device)
    route = rules.choose_route(settings, emergency=emergency,
                               has_login=login is not None or password is not None)
    audit_otp(device, "otp.requested", actor, now, username=username, route=route.value,
              emergency=emergency)
    if route is Route.APPROVAL:
        address = clean_email(email)
        resent = resend_if_valid(device=device, username=username, email=address,
                                 actor=actor, now=now)
        if resent is not None:
            return Answer("sent", resent.otp.expires_at, sent_to=rules.mask_email(address))
        ask = ask_approvers(device=device, username=username, email=address,
                            emergency=emergency, settings=settings, actor=actor, now=now,
                            base_url=base_url)
        return Answer("awaiting_approval", ask.expires_at, request_id=ask.id)
    if route is Route.INTERNAL:
        address, issuer = _internal_user_email(device, login, password, actor, now), \
            Issuer.INTERNAL
    else:
        address, issuer = directory.find_mail(username), Issuer.DIRECTORY
    sent = send_code(device=device, username=username, email=address, issuer=issuer,
                     actor=actor, now=now, settings=settings)
    return Answer("sent", sent.otp.expires_at, sent_to=rules.mask_email(address))


def _internal_user_email(device: Device, login, password, actor: Actor,
                         now: datetime) -> str:
    """The portal account's address, for an active member (any role) of the device's
    department; one answer for an unknown login, a wrong password or a throttled one."""
    if not isinstance(login, str) or not isinstance(password, str) or not login.strip():
        raise InvalidInputError({"login": ["Give the portal login and password."]})
    try:
        user = accounts.check_password(email=login, password=password,
                                       client_ip=actor.client_ip, now=now,
                                       action="otp.internal_login")
    except (ThrottledError, InvalidInputError):
        raise InvalidCredentialsError(INVALID_CREDENTIALS) from None
    is_member = db.session.scalar(select(Membership.id).where(
        Membership.user_id == user.id, Membership.department_id == device.department_id)
        .limit(1)) is not None
    if not is_member:
        keep_changes()  # the attempt was counted; the answer is that of a wrong password
        raise InvalidCredentialsError(INVALID_CREDENTIALS)
    return user.email


# --- asking the approvers ------------------------------------------------------------


def recipients_of(device: Device) -> list[str]:
    """The department's Recipient(s), or with none set its approvers' addresses."""
    recipients = device.department.settings.recipients
    if recipients:
        return recipients
    return list(db.session.scalars(
        select(User.email).join(Membership, Membership.user_id == User.id)
        .where(Membership.department_id == device.department_id,
               Membership.role.in_(roles_allowed(Action.DECIDE)), User.is_enabled)
        .distinct().order_by(User.email)))


def ask_approvers(*, device: Device, username: str, email: str, emergency: bool,
                  settings: rules.OtpSettings, actor: Actor, now: datetime,
                  base_url: str) -> OtpAccessRequest:
    """A new OTP access request, mailed to the approvers — or the one already pending
    for this device, username and email (nothing is sent again). A new one is held to
    the device's minimum interval between new codes; waiting doesn't move it."""
    pending = db.session.scalar(
        select(OtpAccessRequest)
        .where(OtpAccessRequest.device_id == device.id,
               OtpAccessRequest.username_key == username.casefold(),
               OtpAccessRequest.email_key == email.casefold(),
               OtpAccessRequest.status == AccessStatus.PENDING.value,
               OtpAccessRequest.expires_at > now).limit(1))
    if pending is not None:
        return pending
    wait = rules.retry_after_new_code(device.last_new_otp_at, now, settings)
    if wait:
        raise TooSoonError(
            f"A new one-time password for {device.name} can be requested in {wait} "
            "seconds (the department's minimum interval).", wait)
    ask = OtpAccessRequest(
        device_id=device.id, department_id=device.department_id, username=username,
        username_key=username.casefold(), email=email, email_key=email.casefold(),
        is_emergency=emergency, status=AccessStatus.PENDING.value, created_at=now,
        expires_at=now + settings.lifetime)
    db.session.add(ask)
    db.session.flush()
    sign_in_required = device.department.settings.is_sign_in_required_to_decide
    for recipient in recipients_of(device):
        token = crypto.new_token()
        db.session.add(ApprovalLink(otp_request_id=ask.id, recipient_email=recipient,
                                    token_hash=crypto.keyed_hash(token), created_at=now,
                                    is_sign_in_required=sign_in_required))
        context = {"ask": ask, "device": device, "recipient": recipient,
                   **mail.link_context(token=token, base_url=base_url,
                                       expires_at=ask.expires_at, now=now)}
        mail.queue_message(
            recipient=recipient, template="otp_access_request", context=context,
            subject=(f"{'Emergency access: o' if emergency else 'O'}ne-time password "
                     f"request for {device.name}"),
            department_id=device.department_id, now=now, otp_request_id=ask.id)
        audit_ask(ask, "email.queued", actor, now, recipient=recipient)
    db.session.flush()
    audit_ask(ask, "otp.access_requested", actor, now, username=username,
              email=rules.mask_email(email), emergency=emergency,
              expires_at=ask.expires_at.isoformat())
    return ask


def audit_ask(ask: OtpAccessRequest, action: str, actor: Actor, now: datetime,
              **details) -> None:
    audit_otp(ask.device, action, actor, now, target_type="otp_request", target_id=ask.id,
              otp_request_id=ask.id, **details)


# --- deciding ------------------------------------------------------------------------


def is_link_current(link: ApprovalLink) -> bool:
    """A link works only while its recipient is still one the request would be sent to."""
    ask = link.otp_request
    return link.recipient_email.lower() in {r.lower() for r in recipients_of(ask.device)}


def is_own(ask: OtpAccessRequest, user: User | None, email: str | None = None) -> bool:
    """Nobody approves a one-time password for their own address."""
    addresses = {a.lower() for a in (email, user.email if user else None) if a}
    return ask.email.lower() in addresses


def decide_with_link(*, link: ApprovalLink, decision: str, signed_in: User | None,
                     comment=None, actor: Actor, now: datetime,
                     user_agent: str = "") -> OtpAccessRequest:
    """A recipient's Approve / Deny from the email's link."""
    approve, comment = _approve_or_deny(decision, comment)
    ask = link.otp_request
    check_link_holder(link, signed_in, is_current=is_link_current(link))
    if is_own(ask, signed_in, link.recipient_email):
        raise ForbiddenError(OWN_REQUEST)
    return _decide(ask, approve, decided_by=link.recipient_email, comment=comment,
                   actor=actor, now=now, via="email", recipient=link.recipient_email,
                   user_agent=user_agent[:200])


def decide_in_portal(*, user: User, request_id: int, decision: str, actor: Actor,
                     now: datetime, comment=None, user_agent: str = "") -> OtpAccessRequest:
    approve, comment = _approve_or_deny(decision, comment)
    ask = db.session.get(OtpAccessRequest, request_id)
    if ask is None:
        raise NotFoundError("No such one-time password request.")
    authz.require(user, Action.DECIDE, ask.department_id,
                  "You can't decide requests of this department.")
    if is_own(ask, user):
        raise ForbiddenError(OWN_REQUEST)
    return _decide(ask, approve, decided_by=user.email, comment=comment, actor=actor,
                   now=now, via="portal", user_agent=user_agent[:200])


def _approve_or_deny(decision: str, comment) -> tuple[bool, str | None]:
    if decision not in ("approve", "allow", "deny"):
        raise InvalidInputError({"decision": ["Use “approve” or “deny”."]})
    return decision != "deny", clean_text(comment, "comment", MAX_REASON)


def _decide(ask: OtpAccessRequest, approve: bool, *, decided_by: str, comment,
            actor: Actor, now: datetime, **details) -> OtpAccessRequest:
    status = AccessStatus.APPROVED if approve else AccessStatus.DENIED
    won = db.session.execute(
        update(OtpAccessRequest)
        .where(OtpAccessRequest.id == ask.id,
               OtpAccessRequest.status == AccessStatus.PENDING.value,
               OtpAccessRequest.expires_at > now)
        .values(status=status.value, decided_at=now, decided_by=decided_by,
                comment=comment)
        .execution_options(synchronize_session=False)).rowcount == 1
    db.session.expire(ask)
    if not won:
        if now >= ask.expires_at or ask.status == AccessStatus.TIMED_OUT.value:
            if expire_one(ask, now):
                keep_changes()
            raise ExpiredError("This request has expired.")
        raise AlreadyDecidedError("This request has already been decided.")
    mail.cancel_for_otp_requests([ask.id])
    audit_ask(ask, f"otp.{status.value}", actor, now, decided_by=decided_by,
              comment=comment, **details)
    if approve:  # an approval's code counts for the interval, but isn't held to it
        send_code(device=ask.device, username=ask.username, email=ask.email,
                  issuer=Issuer.APPROVAL, actor=actor, now=now, issued_by=decided_by,
                  access_request=ask, held_to_interval=False)
    return ask


def expire_one(ask: OtpAccessRequest, now: datetime) -> bool:
    won = transitions.time_out_one(OtpAccessRequest, ask.id, now)
    db.session.expire(ask)
    if won:
        mail.cancel_for_otp_requests([ask.id])
        audit_ask(ask, "otp.timed_out", SYSTEM, now)
    return won


def expire_overdue(now: datetime, limit: int | None = None) -> list[int]:
    """Overdue pending OTP access requests (the `limit` earliest due, or all) → timed_out,
    once (the expiry job; transitions.time_out_due). Only the columns the audit events
    need are read; the events go in one bulk insert."""
    moved = transitions.time_out_due(OtpAccessRequest, now, limit, OtpAccessRequest.device_id)
    if not moved:
        return []
    mail.cancel_for_otp_requests([row.id for row in moved])
    devices = {d.id: d for d in db.session.execute(
        select(Device.id, Device.name, Device.department_id)
        .where(Device.id.in_(sorted({row.device_id for row in moved}))))}
    # The event audit_ask writes, without loading each request.
    record_events([{"actor": SYSTEM, "action": "otp.timed_out", "target_type": "otp_request",
                    "target_id": row.id, "now": now,
                    "department_id": devices[row.device_id].department_id,
                    "details": {"device": devices[row.device_id].name,
                                "otp_request_id": row.id}}
                   for row in moved])
    return [row.id for row in moved]


def get_for_device(device: Device, request_id: int) -> OtpAccessRequest:
    ask = db.session.get(OtpAccessRequest, request_id)
    if ask is None or ask.device_id != device.id:
        raise NotFoundError("No such one-time password request for this device.")
    return ask


def pending_for(user: User, now: datetime, limit: int = 50) -> list[OtpAccessRequest]:
    """Open OTP access requests of the departments where the user decides."""
    where = [OtpAccessRequest.status == AccessStatus.PENDING.value,
             OtpAccessRequest.expires_at > now]
    departments = authz.department_ids_where(user, Action.DECIDE)
    if departments is not None:
        where.append(OtpAccessRequest.department_id.in_(departments))
    return list(db.session.scalars(
        select(OtpAccessRequest).where(*where)
        .options(joinedload(OtpAccessRequest.device), joinedload(OtpAccessRequest.department))
        .order_by(OtpAccessRequest.expires_at, OtpAccessRequest.id).limit(limit)))
