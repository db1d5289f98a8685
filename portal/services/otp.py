"""One-time passwords: codes are issued, resent and verified; client sessions start and
end. The rules are portal.domain.otp's; how a device's request is routed (directory,
internal user, approvers) and how access requests are decided is in
portal.services.otp_requests.

A code is never stored, logged or audited in plaintext: the database keeps a keyed hash
of it with its binding, and until it is used or expires a sealed copy (for resends); its
email carries a placeholder that only the delivery job fills in.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, case, null, or_, select, update

from portal.domain import otp as rules
from portal.domain.errors import (
    ConflictError,
    InvalidInputError,
    OtpDisabledError,
    TooSoonError,
)
from portal.domain.otp import AccessStatus, Issuer
from portal.domain.permissions import Action
from portal.extensions import db
from portal.models import (
    ClientSession,
    Device,
    OneTimePassword,
    OtpAccessRequest,
    OtpFailureCounter,
)
from portal.services import authz, crypto, mail, transitions, upserts
from portal.services.actors import Actor
from portal.services.audit import record_event, record_events
from portal.services.requests import MAX_REASON, clean_text
from portal.unit_of_work import keep_changes


def settings_of(device: Device) -> rules.OtpSettings:
    """The device's department's OTP settings: one look-up by the department's id (the
    settings' key), not a load of the department and then of its settings; none when
    the token's check loaded them with the device."""
    s = device.department_settings
    return rules.OtpSettings(
        is_allowed=s.is_otp_allowed,
        is_auto_sent_to_directory_users=s.is_otp_auto_sent_to_directory_users,
        is_auto_sent_to_internal_users=s.is_otp_auto_sent_to_internal_users,
        expiration_minutes=s.otp_expiration_minutes,
        min_interval_minutes=s.otp_min_interval_minutes)


def otp_event(device: Device, action: str, actor: Actor, now: datetime, *,
              target_type: str = "device", target_id: int | None = None,
              outcome: str = "success", **details) -> dict:
    """An audit event about one-time passwords on `device`, as record_event's (and
    record_events') arguments."""
    return {"actor": actor, "action": action, "target_type": target_type,
            "target_id": target_id if target_id is not None else device.id,
            "department_id": device.department_id, "now": now, "outcome": outcome,
            "details": {"device": device.name, **details}}


def audit_otp(device: Device, action: str, actor: Actor, now: datetime, **kwargs) -> None:
    record_event(**otp_event(device, action, actor, now, **kwargs))


# --- input ---------------------------------------------------------------------------


def clean_username(raw) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInputError({"username": ["Give the user name at the login screen."]})
    value = raw.strip()
    if len(value) > rules.MAX_USERNAME or not value.isprintable():
        raise InvalidInputError({"username": [
            f"Use at most {rules.MAX_USERNAME} printable characters."]})
    return value


def clean_email(raw, field: str = "email") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInputError({field: ["Give an email address."]})
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidInputError({field: [f"Enter a valid email address ({exc})."]}) from None


# --- issuing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    otp: OneTimePassword
    is_resend: bool


def _valid_code(device: Device, username: str, email: str, now: datetime
                ) -> OneTimePassword | None:
    """The device's unused, unexpired code with this binding (a repeat resends it)."""
    return db.session.scalar(
        select(OneTimePassword)
        .where(OneTimePassword.device_id == device.id,
               OneTimePassword.username_key == username.casefold(),
               OneTimePassword.email_key == email.casefold(),
               OneTimePassword.used_at.is_(None),
               OneTimePassword.expires_at > now)
        .order_by(OneTimePassword.id.desc()).limit(1))


def claim_new_code_slot(device: Device, settings: rules.OtpSettings, now: datetime, *,
                        held: bool = True) -> None:
    """Move the device's "last new code" to now — for a code held to the minimum
    interval, only if the interval has passed (one conditional UPDATE: two requests at
    once can't both get a new code). Else TooSoonError with the seconds to wait."""
    stmt = update(Device).where(Device.id == device.id).values(last_new_otp_at=now)
    if held:
        stmt = stmt.where(or_(Device.last_new_otp_at.is_(None),
                              Device.last_new_otp_at <= now - settings.min_interval))
    if db.session.execute(stmt.execution_options(synchronize_session=False)).rowcount:
        db.session.expire(device, ["last_new_otp_at"])
        return
    db.session.refresh(device, ["last_new_otp_at"])
    wait = max(1, rules.retry_after_new_code(device.last_new_otp_at, now, settings))
    raise TooSoonError(
        f"A new one-time password for {device.name} can be issued in {wait} seconds "
        "(the department's minimum interval). A code already sent still works.", wait)


def _queue_code_email(otp: OneTimePassword, now: datetime) -> None:
    context = {"otp": otp, "device": otp.device, "code": mail.CODE_PLACEHOLDER,
               "expires": otp.expires_at.strftime("%Y-%m-%d %H:%M UTC")}
    mail.queue_message(recipient=otp.email,
                       subject=f"Your one-time password for {otp.device.name}",
                       template="otp_code", context=context,
                       department_id=otp.department_id, now=now, otp_id=otp.id)


def resend_if_valid(*, device: Device, username: str, email: str, actor: Actor,
                    now: datetime) -> Sent | None:
    """Email the device's valid code for this binding again (same code, same expiry) —
    also during a lock-out, which it does not lift — or None when there is none."""
    existing = _valid_code(device, username, email, now)
    binding = rules.binding(device.id, username, email)
    if existing is None or not crypto.open_code(binding, existing.code_ciphertext):
        return None
    _queue_code_email(existing, now)
    audit_otp(device, "otp.sent", actor, now, username=existing.username,
              sent_to=rules.mask_email(existing.email), resend=True,
              expires_at=existing.expires_at.isoformat())
    return Sent(existing, True)


def send_code(*, device: Device, username: str, email: str, issuer: Issuer, actor: Actor,
              now: datetime, settings: rules.OtpSettings | None = None,
              issued_by: str | None = None, access_request: OtpAccessRequest | None = None,
              held_to_interval: bool = True) -> Sent:
    """Email the device's valid code for this binding again (same code, same expiry), or
    issue a new one — held to the minimum interval unless told otherwise."""
    settings = settings or settings_of(device)
    resent = resend_if_valid(device=device, username=username, email=email, actor=actor,
                             now=now)
    if resent is not None:
        return resent
    binding = rules.binding(device.id, username, email)
    claim_new_code_slot(device, settings, now, held=held_to_interval)
    code = rules.new_code()
    otp = OneTimePassword(
        device_id=device.id, department_id=device.department_id, username=username,
        username_key=username.casefold(), email=email, email_key=email.casefold(),
        code_hash=crypto.code_hash(binding, code), code_ciphertext=crypto.seal_code(binding, code),
        issued_via=issuer.value, issued_by=issued_by,
        access_request_id=access_request.id if access_request else None,
        issued_at=now, expires_at=now + settings.lifetime)
    db.session.add(otp)
    db.session.flush()
    _queue_code_email(otp, now)
    audit_otp(device, "otp.sent", actor, now, username=username,
              sent_to=rules.mask_email(email), resend=False, issued_via=issuer.value,
              expires_at=otp.expires_at.isoformat())
    return Sent(otp, False)


def generate_otp(*, user, device: Device, username, email, comment=None, actor: Actor,
                 now: datetime) -> Sent:
    """An approver's "Generate one-time password" on the device's page: no request, not
    held to the minimum interval (the new code still counts for it)."""
    authz.require(user, Action.ISSUE_OTP, device.department_id,
                  "Only approvers and department admins issue one-time passwords.")
    settings = settings_of(device)
    if not settings.is_allowed:
        raise OtpDisabledError(
            "One-time passwords are not allowed for this device's department.")
    username, email = clean_username(username), clean_email(email)
    comment = clean_text(comment, "comment", MAX_REASON)
    sent = send_code(device=device, username=username, email=email,
                     issuer=Issuer.GENERATED, actor=actor, now=now, settings=settings,
                     issued_by=user.email, held_to_interval=False)
    audit_otp(device, "otp.generated", actor, now, username=username,
              sent_to=rules.mask_email(email), comment=comment, resend=sent.is_resend)
    return sent


# --- verifying -----------------------------------------------------------------------


class VerificationFailedError(ConflictError):
    """Wrong, used, expired, locked-out or foreign: the device gets one answer for all."""

    code = "not_allowed"


_COUNTERS = OtpFailureCounter.__table__
_KEY = {"device_id": bindparam("device_id"), "username_key": bindparam("username_key")}


@cache
def _counter_statements(dialect: str):
    """The counter's two upserts for the dialect, built once with bound parameters
    (building one cost about as much as running it):

    - lock: the row created if missing and locked for this transaction (a row lock on
      PostgreSQL; SQLite's write lock), unchanged; it returns the count.
    - count: rules.after_failure applied by the database — it creates the row, counts
      the failure and locks the (device, username) out at the fifth, returning the
      count after it; during a lock it doesn't count, leaves the row as it is and
      returns no row. Every wrong code comes this way: reading the row first, then
      writing it, was two statements (two round trips) where one does. The test beside
      after_failure's checks that both give the same answer from every state.
    """
    insert = upserts.insert(_COUNTERS, dialect)
    now = bindparam("now", type_=_COUNTERS.c.locked_until.type)
    returning = (_COUNTERS.c.failures, _COUNTERS.c.locked_until)
    lock = (insert.values(**_KEY, failures=0, locked_until=None)
            .on_conflict_do_update(index_elements=["device_id", "username_key"],
                                   set_={"failures": _COUNTERS.c.failures})
            .returning(*returning))
    failures = _COUNTERS.c.failures + 1
    locks = failures >= rules.MAX_FAILURES
    count = (insert.values(**_KEY, failures=bindparam("first_failures"),
                           locked_until=bindparam("first_locked_until"))
             .on_conflict_do_update(
                 index_elements=["device_id", "username_key"],
                 set_={"failures": case((locks, 0), else_=failures),
                       "locked_until": case((locks, bindparam("lock_ends",
                                                              type_=now.type)),
                                            else_=null())},
                 where=or_(_COUNTERS.c.locked_until.is_(None), _COUNTERS.c.locked_until <= now))
             .returning(*returning))
    return lock, count


def _lock_counter(connection, device: Device, username_key: str) -> rules.FailureCount:
    """The (device, username) failure count, its row created if missing and locked for
    this transaction."""
    lock, _count = _counter_statements(connection.dialect.name)
    row = connection.execute(lock, {"device_id": device.id,
                                    "username_key": username_key}).one()
    return rules.FailureCount(row.failures, row.locked_until)


_RESET_COUNTER = (_COUNTERS.update()  # (an UPDATE's parameters may not bear its columns' names)
                  .where(_COUNTERS.c.device_id == bindparam("counter_device_id"),
                         _COUNTERS.c.username_key == bindparam("counter_username_key"))
                  .values(failures=0, locked_until=None))


def _reset_counter(connection, device: Device, username_key: str) -> None:
    connection.execute(_RESET_COUNTER, {"counter_device_id": device.id,
                                        "counter_username_key": username_key})


def _count_in_one_statement(connection, device: Device, username_key: str, now: datetime
                            ) -> rules.FailureCount | None:
    """A failure counted by the database (_counter_statements' count): the count after
    it, or None when a lock was on."""
    _lock, count = _counter_statements(connection.dialect.name)
    first = rules.after_failure(rules.FailureCount(), now)
    row = connection.execute(count, {
        "device_id": device.id, "username_key": username_key, "now": now,
        "first_failures": first.failures, "first_locked_until": first.locked_until,
        "lock_ends": now + rules.LOCK_DURATION}).first()
    return None if row is None else rules.FailureCount(row.failures, row.locked_until)


# The code's row as plain columns (what the check and a success read), not an entity:
# most checks find none, and the ORM's set-up for an entity came with every one of them.
_MATCHING_CODE = (select(OneTimePassword.id, OneTimePassword.expires_at,
                         OneTimePassword.used_at, OneTimePassword.email)
                  .where(OneTimePassword.code_hash == bindparam("code_hash"),
                         OneTimePassword.device_id == bindparam("device_id")))


def verify_otp(*, device: Device, username: str, email: str, password: str, actor: Actor,
               now: datetime) -> ClientSession:
    """Check a code typed at the login screen; a success starts a client session. A
    failure raises VerificationFailedError (and what it counted stays). With one-time
    passwords turned off for the department, no code works any more (the same answer).

    `device` may be the token check's read-only snapshot (only its columns and its
    settings are read). The statements go to the session's connection as Core: a wrong
    code — the common failure, and what a guesser sends — is three statements (the
    token's, the code's, the counter's upsert) and its audit INSERT, with no ORM object."""
    if not settings_of(device).is_allowed:
        raise VerificationFailedError("The one-time password was not accepted.")
    username, email = username.strip(), email.strip()
    username_key = username.casefold()
    connection = db.session.connection()
    matched = None
    if rules.is_code_shaped(password.strip()) and len(username) <= rules.MAX_USERNAME:
        digest = crypto.code_hash(rules.binding(device.id, username, email), password.strip())
        matched = connection.execute(_MATCHING_CODE, {"code_hash": digest,
                                                      "device_id": device.id}).first()
    stored = rules.StoredCode(matched.expires_at, matched.used_at) if matched else None
    verdict = rules.check_code(stored, now)
    count = None
    if verdict is rules.Verdict.ALLOWED:  # the right code: is a lock on, and is it unused?
        count = _lock_counter(connection, device, username_key)
        verdict = rules.verify(matched=stored, count=count, now=now)
    if verdict is rules.Verdict.ALLOWED:
        used = connection.execute(
            update(OneTimePassword.__table__)
            .where(OneTimePassword.id == matched.id, OneTimePassword.used_at.is_(None),
                   OneTimePassword.expires_at > now)
            .values(used_at=now, code_ciphertext=None)).rowcount == 1
        verdict = rules.Verdict.ALLOWED if used else rules.Verdict.USED
    if verdict is not rules.Verdict.ALLOWED:
        _count_failure(connection, device, username_key, username, verdict, actor, now)
        keep_changes()
        raise VerificationFailedError("The one-time password was not accepted.")
    if count != rules.after_success():
        _reset_counter(connection, device, username_key)
    session = ClientSession(device_id=device.id, department_id=device.department_id,
                            otp_id=matched.id, username=username, email=matched.email,
                            started_at=now)
    db.session.add(session)
    db.session.flush()
    audit_otp(device, "otp.verified", actor, now, username=username,
              sent_to=rules.mask_email(matched.email), otp_id=matched.id)
    audit_otp(device, "client_session.started", actor, now, target_type="client_session",
              target_id=session.id, user_name=session.user_name)
    return session


def _count_failure(connection, device: Device, username_key: str, username: str,
                   verdict: rules.Verdict, actor: Actor, now: datetime) -> None:
    after = _count_in_one_statement(connection, device, username_key, now)
    reason = rules.Verdict.LOCKED if after is None else verdict
    events = [otp_event(device, "otp.failed", actor, now, outcome="failure",
                        username=username, reason=reason.value)]
    if after is not None and after.is_locked(now):  # not locked before: this one locks
        events.append(otp_event(device, "otp.locked", actor, now, outcome="failure",
                                username=username,
                                locked_until=after.locked_until.isoformat()))
    # One Core INSERT, after the counter's row (the lock order): every wrong code comes
    # this way, and an ORM object's flush at the commit cost more than the statement.
    record_events(events)


def drop_expired_copies(now: datetime) -> int:
    """Sealed copies of codes that expired go (a job): only a valid code may be resent."""
    return db.session.execute(
        update(OneTimePassword)
        .where(OneTimePassword.code_ciphertext.is_not(None),
               OneTimePassword.expires_at <= now)
        .values(code_ciphertext=None)
        .execution_options(synchronize_session=False)).rowcount


# --- client sessions -----------------------------------------------------------------


def end_client_session(*, device: Device, session_id: int, actor: Actor,
                       now: datetime) -> ClientSession:
    session = transitions.end_once(ClientSession, device=device, session_id=session_id,
                                   now=now, what="client session")
    audit_otp(device, "client_session.ended", actor, now, target_type="client_session",
              target_id=session.id, user_name=session.user_name)
    return session


def client_sessions_of(device: Device, limit: int = 20) -> list[ClientSession]:
    """The device's latest client sessions, newest first."""
    return list(db.session.scalars(
        select(ClientSession).where(ClientSession.device_id == device.id)
        .order_by(ClientSession.started_at.desc(), ClientSession.id.desc()).limit(limit)))


def access_status(ask: OtpAccessRequest, now: datetime) -> AccessStatus:
    return rules.effective_access_status(ask.status, ask.expires_at, now)
