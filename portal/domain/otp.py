"""One-time passwords (design.md, "One-time passwords"; Syteca's rules): which way a
request goes, what a code is, when a new one is too soon, when it still works, and the
failure counter that locks a (device, username) out.

Plain Python: the caller passes the settings, what is stored, and `now`.
"""
from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from portal.domain.errors import OtpDisabledError

CODE_DIGITS = 8
MAX_FAILURES = 5                 # consecutive failures per (device, username) …
LOCK_DURATION = timedelta(minutes=15)  # … lock it out for this long
MAX_USERNAME = 256


class Route(StrEnum):
    """How an OTP request is served."""

    DIRECTORY = "directory"   # look the user up; send to the directory's address
    INTERNAL = "internal"     # check the portal account; send to its address
    APPROVAL = "approval"     # an OTP access request to the department's approvers


class Issuer(StrEnum):
    """What issued a code (stored with it, shown on the timeline)."""

    DIRECTORY = "directory"
    INTERNAL = "internal"
    APPROVAL = "approval"
    GENERATED = "generated"   # an approver's "Generate one-time password"


class AccessStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class OtpSettings:
    """The department's "One-Time Passwords" section."""

    is_allowed: bool
    is_auto_sent_to_directory_users: bool
    is_auto_sent_to_internal_users: bool
    expiration_minutes: int
    min_interval_minutes: int

    @property
    def lifetime(self) -> timedelta:
        return timedelta(minutes=self.expiration_minutes)

    @property
    def min_interval(self) -> timedelta:
        return timedelta(minutes=self.min_interval_minutes)


def choose_route(settings: OtpSettings, *, has_login: bool, emergency: bool) -> Route:
    """design.md's table: emergency always asks approvers; with both auto-sends on, a
    login and password take the internal path, anything else the directory; with only
    internal users on, no login means approval."""
    if not settings.is_allowed:
        raise OtpDisabledError(
            "One-time passwords are not allowed for this device's department.")
    if emergency:
        return Route.APPROVAL
    if settings.is_auto_sent_to_internal_users and has_login:
        return Route.INTERNAL
    if settings.is_auto_sent_to_directory_users:
        return Route.DIRECTORY
    return Route.APPROVAL


def new_code() -> str:
    """8 digits from the OS CSPRNG (leading zeros kept)."""
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def is_code_shaped(value: str) -> bool:
    return len(value) == CODE_DIGITS and value.isascii() and value.isdigit()


def binding(device_id: int, username: str, email: str) -> str:
    """What a code is bound to, as compared: usernames and emails case-insensitively.
    JSON keeps the parts apart whatever they contain (a newline in a username can't
    make it another username's email)."""
    return json.dumps([device_id, username.strip().casefold(), email.strip().casefold()])


def seconds_until(later: datetime, now: datetime) -> int:
    return max(0, math.ceil((later - now).total_seconds()))


def retry_after_new_code(last_new_code_at: datetime | None, now: datetime,
                         settings: OtpSettings) -> int:
    """Seconds until the device may have a *new* code (0: now). The interval is per
    device, whatever the username, and runs from the device's last new code."""
    if last_new_code_at is None:
        return 0
    return seconds_until(last_new_code_at + settings.min_interval, now)


@dataclass(frozen=True)
class StoredCode:
    """A code as stored: when it stops working, and whether it was used."""

    expires_at: datetime
    used_at: datetime | None

    def is_valid(self, now: datetime) -> bool:
        """Unused and not expired: a repeat request resends it (same code, same expiry)."""
        return self.used_at is None and now < self.expires_at


@dataclass(frozen=True)
class FailureCount:
    """Consecutive failed verifications of one (device, username)."""

    failures: int = 0
    locked_until: datetime | None = None

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until


def after_failure(count: FailureCount, now: datetime) -> FailureCount:
    """A failed verification. During a lock it doesn't count; the fifth in a row locks
    for 15 minutes and the count starts over."""
    if count.is_locked(now):
        return count
    failures = count.failures + 1
    if failures >= MAX_FAILURES:
        return FailureCount(0, now + LOCK_DURATION)
    return replace(count, failures=failures, locked_until=None)


def after_success() -> FailureCount:
    return FailureCount()


class Verdict(StrEnum):
    ALLOWED = "allowed"
    LOCKED = "locked"      # even the right code, for a while
    NO_MATCH = "no_match"  # wrong, or another device's / username's / email's code
    USED = "used"
    EXPIRED = "expired"


def verify(*, matched: StoredCode | None, count: FailureCount, now: datetime) -> Verdict:
    """The outcome of one verification. `matched` is the stored code with this binding
    and this value, if any. A lock refuses even the right code."""
    if count.is_locked(now):
        return Verdict.LOCKED
    return check_code(matched, now)


def check_code(matched: StoredCode | None, now: datetime) -> Verdict:
    """The code alone, before the lock-out is asked: anything but ALLOWED fails whatever
    the counter says (so it can be counted without reading the counter first)."""
    if matched is None:
        return Verdict.NO_MATCH
    if matched.used_at is not None:
        return Verdict.USED
    if now >= matched.expires_at:
        return Verdict.EXPIRED
    return Verdict.ALLOWED


def mask_email(address: str) -> str:
    """`j.smith@example.com` → `j***@example.com` (what the device may show). The domain
    is what follows the last "@", so nothing of a quoted local part shows."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def effective_access_status(status: AccessStatus | str, expires_at: datetime,
                            now: datetime) -> AccessStatus:
    """A pending OTP access request past its expiry reads as timed out, job or no job."""
    status = AccessStatus(status)
    if status is AccessStatus.PENDING and now >= expires_at:
        return AccessStatus.TIMED_OUT
    return status
