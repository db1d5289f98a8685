"""Users, roles, sign-in (throttled), sign-in sessions and API tokens."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import joinedload

from portal.extensions import db
from portal.domain.permissions import ALL_ROLES
from portal.models import (
    ApiToken,
    Department,
    DepartmentSettings,
    Device,
    LoginSession,
    Membership,
    User,
)
from portal.services import crypto, passwords, snapshots, throttle
from portal.services.actors import Actor
from portal.services.audit import record_event
from portal.domain.errors import ConflictError, InvalidInputError, NotFoundError, ThrottledError
from portal.services.unique import claim
from portal.unit_of_work import keep_changes

SIGN_IN_FAILED = "Invalid email or password."
SIGN_IN_THROTTLED = "Too many sign-in attempts. Try again in {minutes} minute(s)."
SESSION_TOUCH_INTERVAL = timedelta(minutes=1)  # how stale last_seen_at may get at most


def normalize_email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidInputError({"email": [f"Enter a valid email address ({exc})."]}) from None


def find_user(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == email.strip().lower()))


def create_or_update_user(
    *,
    email: str,
    password: str | None,
    role: str,
    department: Department | None,
    actor: Actor,
    now: datetime,
    reject_password_for_existing: bool = False,
) -> User:
    """Create the user (a password is then required) or add a role to an existing one.

    An existing user's password is never changed here."""
    if role not in ALL_ROLES:
        raise InvalidInputError({"role": [f"Choose one of: {', '.join(ALL_ROLES)}."]})
    if role != "admin" and department is None:
        raise InvalidInputError({"department": ["A department role needs a department."]})
    email = normalize_email(email)
    user = find_user(email)
    if user is None:
        if not password:
            raise InvalidInputError({"password": ["A new user needs a password."]})
        problem = passwords.password_problem(password)
        if problem:
            raise InvalidInputError({"password": [problem]})
        user = User(
            email=email,
            password_hash=passwords.hash_password(password),
            is_admin=False,
            is_enabled=True,
            created_at=now,
        )
        with claim(lambda: find_user(email) is not None,
                   f"An account for {email} was created at the same moment. Try again to "
                   "give it the role.", "email"):
            db.session.add(user)
        record_event(actor=actor, action="user.created", target_type="user",
                     target_id=user.id, now=now, details={"email": email})
    elif password and reject_password_for_existing:
        raise InvalidInputError({"password": [
            "This person already has an account: leave the password empty to add the role."]})
    add_role(user=user, role=role, department=department, actor=actor, now=now)
    return user


def add_role(*, user: User, role: str, department: Department | None, actor: Actor,
             now: datetime) -> bool:
    """Grant a role; False when the user already had it."""
    if role == "admin":
        if user.is_admin:
            return False
        user.is_admin = True
        db.session.flush()
        record_event(actor=actor, action="member.added", target_type="user", target_id=user.id,
                     now=now, details={"email": user.email, "role": "admin"})
        return True
    assert department is not None
    user_id, department_id = user.id, department.id

    def held() -> bool:
        return db.session.scalar(select(Membership.id).where(
            Membership.user_id == user_id, Membership.department_id == department_id,
            Membership.role == role)) is not None

    if held():
        return False
    try:
        with claim(held, "That role was given at the same moment."):
            db.session.add(Membership(user_id=user_id, department_id=department_id,
                                      role=role, created_at=now))
    except ConflictError:
        return False  # given by someone else meanwhile: held, as asked
    record_event(actor=actor, action="member.added", target_type="user", target_id=user.id,
                 department_id=department.id, now=now,
                 details={"email": user.email, "role": role, "department": department.name})
    return True


def remove_role(*, membership: Membership, actor: Actor, now: datetime) -> None:
    details = {"email": membership.user.email, "role": membership.role,
               "department": membership.department.name}
    department_id = membership.department_id
    user_id = membership.user_id
    db.session.delete(membership)
    db.session.flush()
    record_event(actor=actor, action="member.removed", target_type="user", target_id=user_id,
                 department_id=department_id, now=now, details=details)


def set_user_enabled(*, user: User, enabled: bool, actor: Actor, now: datetime) -> None:
    """Disabling ends every sign-in session and revokes every token of the user."""
    if user.is_enabled == enabled:
        return
    user.is_enabled = enabled
    if not enabled:
        db.session.execute(
            update(LoginSession)
            .where(LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))
            .values(ended_at=now)
        )
        db.session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    db.session.flush()
    record_event(actor=actor, action="user.enabled" if enabled else "user.disabled",
                 target_type="user", target_id=user.id, now=now,
                 details={"email": user.email})


# --- sign-in -------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInResult:
    user: User
    session_token: str


def _throttle_keys(typed_email: str, client_ip: str) -> list[tuple[str, int]]:
    """(key, limit): the email's first, then the address's."""
    config = current_app.config
    keys = [(f"email:{typed_email}", config["LOGIN_MAX_FAILURES_PER_EMAIL"])]
    if client_ip:
        keys.append((f"ip:{client_ip}", config["LOGIN_MAX_FAILURES_PER_IP"]))
    return keys


def check_password(*, email: str, password: str, client_ip: str, now: datetime,
                   action: str = "auth.sign_in") -> User:
    """The enabled user with these credentials, throttled like sign-in: every attempt is
    counted first. Raises ThrottledError or InvalidInputError with one message that never
    tells whether the account exists; failures are counted and audited (as `action`)
    although the caller fails."""
    # What was typed, as it may be stored and looked up: a control character (NUL can't
    # go into PostgreSQL text) is in no account's email, so it just fails like a typo.
    typed = "".join(ch if ch.isprintable() else "\ufffd" for ch in email.strip().lower())[:254]
    keys = _throttle_keys(typed, client_ip)
    locked = throttle.count_attempt(keys, now)  # before the password is checked
    if locked:
        record_event(actor=Actor(label=typed, client_ip=client_ip), action=action,
                     target_type="user", target_id=typed, now=now, outcome="throttled")
        keep_changes()  # the refusal is audited although the sign-in fails
        raise ThrottledError(SIGN_IN_THROTTLED.format(minutes=math.ceil(locked / 60)), locked)
    user = find_user(typed)
    if user is None:
        passwords.burn_time(password)
        ok = False
    else:
        ok = passwords.verify_password(user.password_hash, password) and user.is_enabled
    if not ok:
        record_event(actor=Actor(label=typed, user_id=user.id if user else None,
                                 client_ip=client_ip),
                     action=action, target_type="user",
                     target_id=user.id if user else typed, now=now, outcome="failure")
        keep_changes()  # the failure counts, and is audited, although the sign-in fails
        raise InvalidInputError({"email": [SIGN_IN_FAILED]})
    assert user is not None
    throttle.forget_attempt(keys[0][0], keys[1:])
    return user


def sign_in(*, email: str, password: str, client_ip: str, now: datetime,
            previous_session_token: str | None = None) -> SignInResult:
    """Check the credentials (check_password) and start a sign-in session. A browser that
    was signed in already (`previous_session_token`) has that session ended once the new
    one starts."""
    user = check_password(email=email, password=password, client_ip=client_ip, now=now)
    if previous_session_token:
        _end_sessions(LoginSession.token_hash == crypto.keyed_hash(previous_session_token),
                      now=now)
    token = crypto.new_token()
    db.session.add(LoginSession(token_hash=crypto.keyed_hash(token), user_id=user.id,
                                created_at=now, last_seen_at=now, client_ip=client_ip or None))
    db.session.flush()
    record_event(actor=Actor.for_user(user, client_ip), action="auth.sign_in",
                 target_type="user", target_id=user.id, now=now)
    user.login_session_token = token
    return SignInResult(user=user, session_token=token)


def load_signed_in_user(session_token: str, *, now: datetime) -> User | None:
    """The user of a live sign-in session, or None (ended, expired, unknown, user
    disabled). A session past its absolute lifetime or idle too long is ended here; a live
    one is marked as seen at most once a minute, so polling rarely writes."""
    row = db.session.scalar(
        select(LoginSession).where(
            LoginSession.token_hash == crypto.keyed_hash(session_token),
            LoginSession.ended_at.is_(None),
        ).options(joinedload(LoginSession.user))  # the session and its user in one query
    )
    if row is None or not row.user.is_enabled:
        return None
    config = current_app.config
    idle = timedelta(seconds=config["SESSION_IDLE_TIMEOUT_SECONDS"])
    last_seen = row.last_seen_at or row.created_at
    if (now - row.created_at >= timedelta(seconds=config["SESSION_ABSOLUTE_LIFETIME_SECONDS"])
            or now - last_seen >= idle):
        _end_sessions(LoginSession.id == row.id, now=now)
        keep_changes()  # ended for good, whatever the refused request answers
        return None
    touch_every = min(SESSION_TOUCH_INTERVAL, idle / 10)
    if now - last_seen >= touch_every:
        db.session.execute(
            update(LoginSession)
            .where(LoginSession.id == row.id, LoginSession.ended_at.is_(None),
                   or_(LoginSession.last_seen_at.is_(None),
                       LoginSession.last_seen_at <= now - touch_every))
            .values(last_seen_at=now)
        )
    row.user.login_session_token = session_token
    return row.user


def _end_sessions(*where, now: datetime) -> None:
    db.session.execute(
        update(LoginSession).where(*where, LoginSession.ended_at.is_(None)).values(ended_at=now)
    )


def sign_out(*, user: User, session_token: str, client_ip: str, now: datetime) -> None:
    _end_sessions(LoginSession.token_hash == crypto.keyed_hash(session_token), now=now)
    record_event(actor=Actor.for_user(user, client_ip), action="auth.sign_out",
                 target_type="user", target_id=user.id, now=now)


# --- API tokens ----------------------------------------------------------------------


def create_user_token(*, user: User, actor: Actor, now: datetime) -> str:
    token = crypto.new_token()
    db.session.add(ApiToken(token_hash=crypto.keyed_hash(token), user_id=user.id,
                            created_at=now))
    db.session.flush()
    record_event(actor=actor, action="token.created", target_type="user", target_id=user.id,
                 now=now, details={"email": user.email, "kind": "user"})
    return token


def create_device_token(*, device: Device, actor: Actor, now: datetime) -> str:
    token = crypto.new_token()
    db.session.add(ApiToken(token_hash=crypto.keyed_hash(token), device_id=device.id,
                            created_at=now))
    db.session.flush()
    record_event(actor=actor, action="token.created", target_type="device",
                 target_id=device.id, department_id=device.department_id, now=now,
                 details={"device": device.name, "kind": "device"})
    return token


def find_token(token: str) -> ApiToken | None:
    """A live token (not revoked; owner enabled), or None — with its owner, in one query.
    (An API call asks find_token_owner, which loads less.)"""
    row = db.session.scalar(
        select(ApiToken).where(ApiToken.token_hash == crypto.keyed_hash(token),
                               ApiToken.revoked_at.is_(None))
        .options(joinedload(ApiToken.user), joinedload(ApiToken.device))
    )
    if row is None:
        return None
    if row.user is not None and not row.user.is_enabled:
        return None
    return row


@dataclass(frozen=True)
class TokenUse:
    """What recording a token's use needs of it (note_token_used)."""
    id: int
    last_used_at: datetime | None


# The conditions of a live token, its hash the parameter "token_hash" (the agent's poll
# checks its token inside its own statement with them too).
LIVE_TOKEN = (ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))


def _live_owner(model, owner_id):
    return (select(model, ApiToken.id, ApiToken.last_used_at)
            .join(ApiToken, owner_id == model.id)
            .where(*LIVE_TOKEN))


_LIVE_OWNER = {"user": _live_owner(User, ApiToken.user_id).where(User.is_enabled),
               "device": _live_owner(Device, ApiToken.device_id)}


# A device token's device with its department's settings, as read-only snapshots
# (portal.services.snapshots), for an agent call that reads the settings first thing and
# changes neither (the one-time password check, a guesser's target): plain columns on the
# request's connection, where two entities through the Session cost more than the query.
# An outer join: the token's check does not depend on them.
_DEVICE_AND_SETTINGS = snapshots.RowShape(Device, DepartmentSettings)
_LIVE_DEVICE_WITH_SETTINGS = (
    select(*_DEVICE_AND_SETTINGS.columns, ApiToken.id, ApiToken.last_used_at)
    .join_from(Device, ApiToken, ApiToken.device_id == Device.id)
    .outerjoin(DepartmentSettings, DepartmentSettings.department_id == Device.department_id)
    .where(*LIVE_TOKEN))


def find_token_owner(token: str, kind: str, *, with_settings: bool = False
                     ) -> tuple[User | Device, TokenUse] | None:
    """The enabled user (kind "user") or the device (kind "device") a live token belongs
    to, and the token's use; None for a token unknown, revoked or of the other kind. One
    query loading one row: every API call starts with it. `with_settings` (devices): the
    device and its department's settings (as its `department_settings`) come as
    read-only snapshots from the same statement."""
    assert kind == "device" or not with_settings
    parameters = {"token_hash": crypto.keyed_hash(token)}
    if with_settings:
        row = db.session.connection().execute(_LIVE_DEVICE_WITH_SETTINGS, parameters).first()
        if row is None:
            return None
        device, settings = _DEVICE_AND_SETTINGS.split(row)
        snapshots.relate(device, "department_settings", settings)
        return device, TokenUse(row[-2], row[-1])
    row = db.session.execute(_LIVE_OWNER[kind], parameters).first()
    if row is None:
        return None
    return row[0], TokenUse(row.id, row.last_used_at)


TOKEN_TOUCH_SECONDS = 60


def note_token_used(token: ApiToken | TokenUse, now: datetime) -> None:
    """Record when a token was last used, at most once a minute: one conditional UPDATE,
    and none at all while the last touch is recent (polling stays read-only)."""
    stale = now - timedelta(seconds=TOKEN_TOUCH_SECONDS)
    if token.last_used_at is not None and token.last_used_at > stale:
        return
    db.session.execute(
        update(ApiToken)
        .where(ApiToken.id == token.id,
               or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= stale))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False))


def _token_owner(row: ApiToken) -> tuple[str, int, int | None, dict]:
    """(target type, target id, department id, details) of a token's audit events."""
    if row.device is not None:
        return ("device", row.device.id, row.device.department_id,
                {"device": row.device.name, "kind": "device"})
    assert row.user is not None
    return "user", row.user.id, None, {"email": row.user.email, "kind": "user"}


def revoke_user_tokens(*, user: User, actor: Actor, now: datetime) -> int:
    """Revoke every live API token of the user; how many were live."""
    revoked = db.session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    if revoked:
        record_event(actor=actor, action="token.revoked", target_type="user",
                     target_id=user.id, now=now,
                     details={"email": user.email, "kind": "user", "count": revoked})
    return revoked


def revoke_token(*, token: str, actor: Actor, now: datetime) -> ApiToken | None:
    """Revoke the live API token (a user's or a device's) with this value; the revoked
    row, or None when no live token has it."""
    row = db.session.scalar(select(ApiToken).where(
        ApiToken.token_hash == crypto.keyed_hash(token), ApiToken.revoked_at.is_(None)))
    if row is None:
        return None
    revoked = db.session.execute(
        update(ApiToken).where(ApiToken.id == row.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    if not revoked:  # revoked meanwhile by someone else
        return None
    target_type, target_id, department_id, details = _token_owner(row)
    record_event(actor=actor, action="token.revoked", target_type=target_type,
                 target_id=target_id, department_id=department_id, now=now,
                 details={**details, "count": 1})
    return row


def rotate_device_token(*, device: Device, actor: Actor, now: datetime) -> tuple[str, int]:
    """Revoke the device's live tokens and give it a new one: (the new token, shown once,
    and how many were revoked)."""
    # One rotation at a time per device, so two at once leave one live token, not two.
    db.session.execute(select(Device.id).where(Device.id == device.id).with_for_update())
    revoked = db.session.execute(
        update(ApiToken)
        .where(ApiToken.device_id == device.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    token = crypto.new_token()
    db.session.add(ApiToken(token_hash=crypto.keyed_hash(token), device_id=device.id,
                            created_at=now))
    db.session.flush()
    record_event(actor=actor, action="token.rotated", target_type="device",
                 target_id=device.id, department_id=device.department_id, now=now,
                 details={"device": device.name, "kind": "device", "revoked": revoked})
    return token, revoked


def get_user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFoundError("No such user.")
    return user
