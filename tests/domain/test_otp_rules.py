"""One-time password rules (portal/domain/otp.py; design.md "One-time passwords",
security.md §13–18): which way a request goes, what a code looks like, what it is bound
to, the minimum interval between new codes, validity, the failure lock-out, the verdict
of one verification, the masked address and a pending request's effective status.
Fixed datetimes only; nothing here reads a clock."""
from __future__ import annotations

import dataclasses
import re
import secrets
from datetime import datetime, timedelta, timezone

import pytest

from portal.domain import otp
from portal.domain.errors import OtpDisabledError
from portal.domain.otp import (
    AccessStatus,
    FailureCount,
    OtpSettings,
    Route,
    StoredCode,
    Verdict,
    after_failure,
    after_success,
    binding,
    choose_route,
    effective_access_status,
    is_code_shaped,
    mask_email,
    new_code,
    retry_after_new_code,
    verify,
)

T0 = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)
FIFTEEN_MINUTES = timedelta(minutes=15)


def settings(*, allowed: bool = True, directory: bool = False, internal: bool = False,
             expiration: int = 30, interval: int = 10) -> OtpSettings:
    return OtpSettings(
        is_allowed=allowed,
        is_auto_sent_to_directory_users=directory,
        is_auto_sent_to_internal_users=internal,
        expiration_minutes=expiration,
        min_interval_minutes=interval,
    )


# --- which way a request goes -------------------------------------------------------

ROUTES = [
    # directory, internal, has_login, emergency -> route
    pytest.param(True, False, False, False, Route.DIRECTORY, id="directory-on"),
    pytest.param(True, False, True, False, Route.DIRECTORY, id="directory-on-login-ignored"),
    pytest.param(False, True, True, False, Route.INTERNAL, id="internal-on-with-login"),
    pytest.param(True, True, True, False, Route.INTERNAL, id="both-on-with-login"),
    pytest.param(True, True, False, False, Route.DIRECTORY, id="both-on-no-login"),
    pytest.param(False, True, False, False, Route.APPROVAL, id="only-internal-no-login"),
    pytest.param(False, False, False, False, Route.APPROVAL, id="neither-on"),
    pytest.param(False, False, True, False, Route.APPROVAL, id="neither-on-with-login"),
    pytest.param(False, False, False, True, Route.APPROVAL, id="emergency-neither-on"),
    pytest.param(True, False, False, True, Route.APPROVAL, id="emergency-directory-on"),
    pytest.param(False, True, True, True, Route.APPROVAL, id="emergency-internal-on-login"),
    pytest.param(True, True, False, True, Route.APPROVAL, id="emergency-both-on"),
    pytest.param(True, True, True, True, Route.APPROVAL, id="emergency-both-on-login"),
]


@pytest.mark.parametrize("directory, internal, has_login, emergency, expected", ROUTES)
def test_route_follows_the_settings_table(directory, internal, has_login, emergency,
                                          expected):
    chosen = choose_route(settings(directory=directory, internal=internal),
                          has_login=has_login, emergency=emergency)
    assert chosen is expected


@pytest.mark.parametrize("directory, internal, has_login, emergency", [
    (False, False, False, False),
    (True, True, True, False),
    (True, True, False, True),
    (False, True, True, True),
])
def test_otp_not_allowed_refuses_every_request(directory, internal, has_login, emergency):
    with pytest.raises(OtpDisabledError):
        choose_route(settings(allowed=False, directory=directory, internal=internal),
                     has_login=has_login, emergency=emergency)


# --- codes ----------------------------------------------------------------------------

def test_new_codes_are_eight_ascii_digits_with_leading_zeros_kept():
    codes = [new_code() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9]{8}", code) for code in codes)
    assert all(is_code_shaped(code) for code in codes)
    # about one code in ten starts with 0; with 2000 draws none doing so is ~0.9**2000
    assert any(code.startswith("0") for code in codes)
    assert len(set(codes)) > 1990


@pytest.mark.parametrize("drawn, code", [
    (42, "00000042"),
    (0, "00000000"),
    (10 ** 8 - 1, "99999999"),
])
def test_new_code_comes_from_secrets(monkeypatch, drawn, code):
    bounds = []

    def randbelow(n: int) -> int:
        bounds.append(n)
        return drawn

    monkeypatch.setattr(secrets, "randbelow", randbelow)
    assert new_code() == code
    assert bounds == [10 ** 8]


@pytest.mark.parametrize("value, shaped", [
    ("12345678", True),
    ("00000042", True),
    ("1234567", False),
    ("123456789", False),
    ("１２３４５６７８", False),       # full-width digits
    ("١٢٣٤٥٦٧٨", False),              # Arabic-Indic digits
    ("12 45678", False),
    (" 12345678", False),
    ("12345678\n", False),
    ("", False),
    ("abcdefgh", False),
    ("1234567a", False),
    ("+1234567", False),
    ("1234567\x00", False),
])
def test_code_shape(value, shaped):
    assert is_code_shaped(value) is shaped


# --- binding (device + username + email) ---------------------------------------------

@pytest.mark.parametrize("username, email", [
    ("jsmith", "j.smith@example.com"),
    ("JSmith", "J.Smith@Example.COM"),
    ("JSMITH", "j.smith@EXAMPLE.com"),
    ("  jsmith ", " j.smith@example.com\t"),
    ("\tJSmith\n", "  J.SMITH@example.com  "),
])
def test_binding_ignores_case_and_surrounding_whitespace(username, email):
    assert binding(7, username, email) == binding(7, "jsmith", "j.smith@example.com")


@pytest.mark.parametrize("device_id, username, email", [
    pytest.param(8, "jsmith", "j.smith@example.com", id="another-device"),
    pytest.param(7, "jsmith2", "j.smith@example.com", id="another-username"),
    pytest.param(7, "j smith", "j.smith@example.com", id="inner-space-counts"),
    pytest.param(7, "jsmith", "j.smith@example.org", id="another-email"),
    pytest.param(7, "jsmith", "jsmith@example.com", id="another-local-part"),
    pytest.param(7, "j.smith@example.com", "jsmith", id="fields-swapped"),
])
def test_binding_differs_for_another_device_username_or_email(device_id, username, email):
    assert binding(device_id, username, email) != binding(7, "jsmith", "j.smith@example.com")


def test_binding_keeps_username_and_email_apart_whatever_they_contain():
    assert binding(7, "a\nb", "c@example.com") != binding(7, "a", "b\nc@example.com")
    assert binding(7, "a", "b@example.com") != binding(7, "a\nb@example.com", "")


# --- minimum interval between new codes -----------------------------------------------

@pytest.mark.parametrize("last, now, interval, expected", [
    pytest.param(None, T0, 10, 0, id="never-had-a-code"),
    pytest.param(T0, T0 + timedelta(minutes=10), 10, 0, id="exactly-at-interval"),
    pytest.param(T0, T0 + timedelta(minutes=11), 10, 0, id="after-interval"),
    pytest.param(T0, T0 + timedelta(minutes=10) - SECOND, 10, 1, id="one-second-before"),
    pytest.param(T0, T0 + timedelta(minutes=10) - timedelta(milliseconds=1), 10, 1,
                 id="a-millisecond-before-rounds-up"),
    pytest.param(T0, T0 + timedelta(minutes=10) - timedelta(seconds=1.2), 10, 2,
                 id="partial-seconds-round-up"),
    pytest.param(T0, T0, 10, 600, id="right-after-a-new-code"),
    pytest.param(T0, T0 + timedelta(minutes=3), 10, 420, id="part-way"),
    pytest.param(T0, T0, 1, 60, id="interval-from-settings-1"),
    pytest.param(T0, T0 + timedelta(minutes=1), 1, 0, id="interval-from-settings-1-over"),
    pytest.param(T0, T0 + timedelta(minutes=30), 60, 1800, id="interval-from-settings-60"),
])
def test_retry_after_new_code(last, now, interval, expected):
    assert retry_after_new_code(last, now, settings(interval=interval)) == expected


# --- a stored code's validity ---------------------------------------------------------

EXPIRES = T0 + timedelta(minutes=30)


@pytest.mark.parametrize("code, now, valid", [
    pytest.param(StoredCode(EXPIRES, None), T0, True, id="fresh"),
    pytest.param(StoredCode(EXPIRES, None), EXPIRES - SECOND, True, id="second-before-expiry"),
    pytest.param(StoredCode(EXPIRES, None), EXPIRES, False, id="at-expiry"),
    pytest.param(StoredCode(EXPIRES, None), EXPIRES + SECOND, False, id="second-after-expiry"),
    pytest.param(StoredCode(EXPIRES, T0 + SECOND), T0 + 2 * SECOND, False, id="used"),
    pytest.param(StoredCode(EXPIRES, T0), EXPIRES + SECOND, False, id="used-and-expired"),
])
def test_stored_code_validity(code, now, valid):
    assert code.is_valid(now) is valid


# --- failure count and lock-out -------------------------------------------------------

def fail(count: FailureCount, times: int, start: datetime, step: timedelta = SECOND
         ) -> tuple[FailureCount, datetime]:
    """`times` failures, `step` apart; returns the count and the time of the last one."""
    now = start
    for i in range(times):
        now = start + i * step
        count = after_failure(count, now)
    return count, now


def test_four_failures_do_not_lock():
    count, last = fail(FailureCount(), 4, T0)
    assert count.failures == 4
    assert not count.is_locked(last)
    assert count.locked_until is None


def test_the_fifth_failure_locks_for_exactly_fifteen_minutes_and_restarts_the_count():
    count, last = fail(FailureCount(), 5, T0)
    assert count == FailureCount(failures=0, locked_until=last + FIFTEEN_MINUTES)
    assert count.is_locked(last)
    assert count.is_locked(last + FIFTEEN_MINUTES - timedelta(microseconds=1))
    assert not count.is_locked(last + FIFTEEN_MINUTES)


@pytest.mark.parametrize("offset", [
    timedelta(0), SECOND, timedelta(minutes=7), FIFTEEN_MINUTES - SECOND,
])
def test_failures_during_the_lock_neither_count_nor_extend_it(offset):
    locked, last = fail(FailureCount(), 5, T0)
    count, _ = fail(locked, 20, last + offset, step=timedelta(milliseconds=10))
    assert count == locked


def test_after_the_lock_counting_starts_from_zero():
    locked, last = fail(FailureCount(), 5, T0)
    unlocked_at = last + FIFTEEN_MINUTES
    count = after_failure(locked, unlocked_at)
    assert count == FailureCount(failures=1, locked_until=None)
    count, again = fail(count, 3, unlocked_at + SECOND)
    assert count.failures == 4 and not count.is_locked(again)
    count = after_failure(count, again + SECOND)
    assert count.locked_until == again + SECOND + FIFTEEN_MINUTES


@pytest.mark.parametrize("failures", [0, 1, 4])
def test_a_success_resets_the_count(failures):
    before, _ = fail(FailureCount(), failures, T0)
    assert before.failures == failures
    assert after_success() == FailureCount()
    # four more failures after a success stay short of a lock
    reset, last = fail(after_success(), 4, T0 + timedelta(minutes=1))
    assert not reset.is_locked(last)


def test_failures_keep_counting_across_codes():
    """A resend or a new code does not reset: the count is per (device, username) and
    holds nothing about codes, so issuing codes can't touch it; only after_success()
    gives a fresh one."""
    assert [f.name for f in dataclasses.fields(FailureCount)] == ["failures", "locked_until"]
    count, last = fail(FailureCount(), 4, T0)
    fresh = StoredCode(last + timedelta(minutes=30), None)   # a new code is issued
    assert verify(matched=None, count=count, now=last + SECOND) is Verdict.NO_MATCH
    assert count.failures == 4                               # verify only judges
    count = after_failure(count, last + SECOND)              # fifth failure, new code
    assert count.is_locked(last + SECOND)
    assert verify(matched=fresh, count=count, now=last + 2 * SECOND) is Verdict.LOCKED


# --- the verdict of one verification --------------------------------------------------

VALID = StoredCode(EXPIRES, None)
USED = StoredCode(EXPIRES, T0 + SECOND)
LOCKED = FailureCount(0, T0 + FIFTEEN_MINUTES)
CLEAN = FailureCount()
THREE = FailureCount(3, None)


@pytest.mark.parametrize("matched, count, now, verdict", [
    pytest.param(VALID, CLEAN, T0, Verdict.ALLOWED, id="valid"),
    pytest.param(VALID, THREE, EXPIRES - SECOND, Verdict.ALLOWED, id="valid-after-failures"),
    pytest.param(VALID, LOCKED, T0, Verdict.LOCKED, id="locked-even-when-right"),
    pytest.param(None, LOCKED, T0, Verdict.LOCKED, id="locked-and-wrong"),
    pytest.param(USED, LOCKED, T0 + 2 * SECOND, Verdict.LOCKED, id="locked-and-used"),
    pytest.param(VALID, LOCKED, T0 + FIFTEEN_MINUTES, Verdict.ALLOWED, id="lock-over"),
    pytest.param(None, CLEAN, T0, Verdict.NO_MATCH, id="no-match"),
    pytest.param(USED, CLEAN, T0 + 2 * SECOND, Verdict.USED, id="used"),
    pytest.param(VALID, CLEAN, EXPIRES, Verdict.EXPIRED, id="at-expiry"),
    pytest.param(VALID, CLEAN, EXPIRES + SECOND, Verdict.EXPIRED, id="second-after-expiry"),
])
def test_verify(matched, count, now, verdict):
    assert verify(matched=matched, count=count, now=now) is verdict


# --- masked address -------------------------------------------------------------------

@pytest.mark.parametrize("address, masked", [
    ("j.smith@example.com", "j***@example.com"),
    ("jsmith@mail.example.org", "j***@mail.example.org"),
    ("j@example.com", "j***@example.com"),
    ("not-an-address", "***"),
    ("", "***"),
    ('"a@b"@example.com', '"***@example.com'),
])
def test_mask_email(address, masked):
    assert mask_email(address) == masked


# --- effective status of an OTP access request ----------------------------------------

@pytest.mark.parametrize("status, now, effective", [
    pytest.param(AccessStatus.PENDING, EXPIRES - SECOND, AccessStatus.PENDING, id="pending"),
    pytest.param("pending", EXPIRES - SECOND, AccessStatus.PENDING, id="pending-as-text"),
    pytest.param(AccessStatus.PENDING, EXPIRES, AccessStatus.TIMED_OUT, id="at-expiry"),
    pytest.param("pending", EXPIRES + SECOND, AccessStatus.TIMED_OUT, id="after-expiry"),
    pytest.param(AccessStatus.APPROVED, EXPIRES + SECOND, AccessStatus.APPROVED,
                 id="approved-stays"),
    pytest.param("denied", EXPIRES + SECOND, AccessStatus.DENIED, id="denied-stays"),
    pytest.param(AccessStatus.TIMED_OUT, EXPIRES - SECOND, AccessStatus.TIMED_OUT,
                 id="timed-out-stays"),
    pytest.param(AccessStatus.APPROVED, T0, AccessStatus.APPROVED, id="approved-early"),
])
def test_effective_access_status(status, now, effective):
    assert effective_access_status(status, EXPIRES, now) is effective


def test_the_rules_use_the_documented_numbers():
    assert otp.CODE_DIGITS == 8
    assert otp.MAX_FAILURES == 5
    assert otp.LOCK_DURATION == FIFTEEN_MINUTES
    assert settings(expiration=30).lifetime == timedelta(minutes=30)
    assert settings(interval=10).min_interval == timedelta(minutes=10)
