"""Users, roles, sign-in (throttled), sign-in sessions and API tokens."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import select, update

from portal.extensions import db
from portal.models import ApiToken, Department, Device, LoginSession, LoginThrottle, Membership, User
from portal.models.accounts import ROLES
from portal.services import crypto, passwords
from portal.services.actors import Actor
from portal.services.audit import record_event
from portal.services.errors import ConflictError, InvalidInputError, NotFoundError, ThrottledError
from portal.services.unique import claim

ALL_ROLES = ("admin",) + ROLES
SIGN_IN_FAILED = "Invalid email or password."
SIGN_IN_THROTTLED = "Too many sign-in attempts. Try again in {minutes} minute(s)."


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


def _throttle_keys(email: str, client_ip: str) -> list[tuple[str, int]]:
    config = current_app.config
    keys = [(f"email:{email.strip().lower()[:254]}", config["LOGIN_MAX_FAILURES_PER_EMAIL"])]
    if client_ip:
        keys.append((f"ip:{client_ip}", config["LOGIN_MAX_FAILURES_PER_IP"]))
    return keys


def _locked_for(keys: list[tuple[str, int]], now: datetime) -> int:
    longest = 0
    for key, _limit in keys:
        row = db.session.get(LoginThrottle, key)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            longest = max(longest, math.ceil((row.locked_until - now).total_seconds()))
    return longest


def _count_failure(keys: list[tuple[str, int]], now: datetime) -> None:
    config = current_app.config
    window = timedelta(seconds=config["LOGIN_THROTTLE_WINDOW_SECONDS"])
    for key, limit in keys:
        row = db.session.get(LoginThrottle, key)
        if row is None:
            row = LoginThrottle(key=key, failures=0, window_started_at=now)
            db.session.add(row)
        if now - row.window_started_at > window:
            row.failures = 0
            row.window_started_at = now
        row.failures += 1
        if row.failures >= limit:
            row.locked_until = now + timedelta(seconds=config["LOGIN_LOCK_SECONDS"])
            row.failures = 0
            row.window_started_at = now
    db.session.flush()


def _clear_failures(email: str) -> None:
    row = db.session.get(LoginThrottle, f"email:{email}")
    if row is not None:
        db.session.delete(row)
        db.session.flush()


def sign_in(*, email: str, password: str, client_ip: str, now: datetime) -> SignInResult:
    """Check the credentials; raise ThrottledError or InvalidInputError with one message
    that never tells whether the account exists."""
    # What was typed, as it may be stored and looked up: a control character (NUL can't
    # go into PostgreSQL text) is in no account's email, so it just fails like a typo.
    typed = "".join(ch if ch.isprintable() else "\ufffd" for ch in email.strip().lower())[:254]
    keys = _throttle_keys(typed, client_ip)
    locked = _locked_for(keys, now)
    if locked:
        record_event(actor=Actor(label=typed, client_ip=client_ip), action="auth.sign_in",
                     target_type="user", target_id=typed, now=now, outcome="throttled")
        raise ThrottledError(SIGN_IN_THROTTLED.format(minutes=math.ceil(locked / 60)), locked)
    user = find_user(typed)
    if user is None:
        passwords.burn_time(password)
        ok = False
    else:
        ok = passwords.verify_password(user.password_hash, password) and user.is_enabled
    if not ok:
        _count_failure(keys, now)
        record_event(actor=Actor(label=typed, user_id=user.id if user else None,
                                 client_ip=client_ip),
                     action="auth.sign_in", target_type="user",
                     target_id=user.id if user else typed, now=now, outcome="failure")
        raise InvalidInputError({"email": [SIGN_IN_FAILED]})
    assert user is not None
    _clear_failures(user.email)
    token = crypto.new_token()
    db.session.add(LoginSession(token_hash=crypto.keyed_hash(token), user_id=user.id,
                                created_at=now, client_ip=client_ip or None))
    db.session.flush()
    record_event(actor=Actor.for_user(user, client_ip), action="auth.sign_in",
                 target_type="user", target_id=user.id, now=now)
    user.login_session_token = token
    return SignInResult(user=user, session_token=token)


def load_signed_in_user(session_token: str) -> User | None:
    """The user of a live sign-in session, or None (ended, unknown, user disabled)."""
    row = db.session.scalar(
        select(LoginSession).where(
            LoginSession.token_hash == crypto.keyed_hash(session_token),
            LoginSession.ended_at.is_(None),
        )
    )
    if row is None or not row.user.is_enabled:
        return None
    row.user.login_session_token = session_token
    return row.user


def sign_out(*, user: User, session_token: str, client_ip: str, now: datetime) -> None:
    db.session.execute(
        update(LoginSession)
        .where(LoginSession.token_hash == crypto.keyed_hash(session_token),
               LoginSession.ended_at.is_(None))
        .values(ended_at=now)
    )
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
    """A live token (not revoked; owner enabled), or None."""
    row = db.session.scalar(
        select(ApiToken).where(ApiToken.token_hash == crypto.keyed_hash(token),
                               ApiToken.revoked_at.is_(None))
    )
    if row is None:
        return None
    if row.user is not None and not row.user.is_enabled:
        return None
    return row


def get_user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFoundError("No such user.")
    return user
