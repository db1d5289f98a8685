"""The session request policy and state machine (portal/domain/requests.py) against
design.md, "How a session request is decided": every combination of the settings and the
device's state, the deadlines, refusals (409 / 410), the checks as the technician reads
them, seconds left and the exact outcome texts. No app, fixed clocks."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from portal.domain.requests import (
    AlreadyDecidedError,
    EmailCheck,
    EndUserCheck,
    ExpiredError,
    PolicyInput,
    Status,
    check_states,
    effective_status,
    outcome_message,
    plan_request,
    refusal,
    seconds_left,
)

NOW = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)
EXCLUDED_BECAUSE = "device excluded from session confirmation"

# design.md, copied verbatim.
REASON_NOT_REQUIRED = "confirmation not required"
REASON_LOCKED = "device locked; confirmation not shown"
REASON_NOBODY = "nobody logged in; confirmation not shown"
MSG_APPROVED = "The session will begin shortly."
MSG_END_USER_DECLINED = "The end user has rejected the Session Confirmation Request"
MSG_TIMED_OUT = "The Session Confirmation request has timed out."
MSG_CANCELLED = "The request was cancelled."


def policy(*, excluded=False, confirm=False, show_locked=False, locked=False,
           user="alice", email=False, confirm_timeout=60, email_timeout=180):
    return PolicyInput(
        is_confirmation_shown=confirm, confirmation_timeout_seconds=confirm_timeout,
        is_shown_when_locked=show_locked, is_email_authorization_required=email,
        email_authorization_timeout_seconds=email_timeout, is_locked=locked,
        logged_in_user=user, exclusion=EXCLUDED_BECAUSE if excluded else None)


# --- the policy: hand-written rows first ----------------------------------------------

# (settings and state) -> (status, end_user, email, decided_by, decision_reason)
APPROVED_BY_POLICY = ("approved", "skipped", "skipped", "policy")
ROWS = [
    ({}, (*APPROVED_BY_POLICY, REASON_NOT_REQUIRED)),
    ({"locked": True, "user": None}, (*APPROVED_BY_POLICY, REASON_NOT_REQUIRED)),
    ({"confirm": True}, ("pending", "pending", "skipped", None, None)),
    ({"confirm": True, "locked": True}, (*APPROVED_BY_POLICY, REASON_LOCKED)),
    ({"confirm": True, "user": None}, (*APPROVED_BY_POLICY, REASON_NOBODY)),
    ({"confirm": True, "user": "  "}, (*APPROVED_BY_POLICY, REASON_NOBODY)),
    # Locked and nobody logged in: the lock is the reason given.
    ({"confirm": True, "locked": True, "user": None}, (*APPROVED_BY_POLICY, REASON_LOCKED)),
    ({"confirm": True, "show_locked": True, "locked": True, "user": None},
     ("pending", "pending", "skipped", None, None)),
    ({"confirm": True, "locked": True, "email": True},
     ("pending", "skipped", "pending", None, None)),
    ({"email": True}, ("pending", "skipped", "pending", None, None)),
    ({"confirm": True, "email": True}, ("pending", "pending", "pending", None, None)),
    ({"excluded": True, "confirm": True, "email": True},
     ("approved", "skipped", "skipped", "exclusion", EXCLUDED_BECAUSE)),
]


@pytest.mark.parametrize("given, expected", ROWS)
def test_policy_rows_from_the_design(given, expected):
    plan = plan_request(policy(**given), NOW)
    assert (plan.status, plan.end_user, plan.email, plan.decided_by,
            plan.decision_reason) == expected


# --- the policy: every combination ----------------------------------------------------


def expected_plan(excluded, confirm, show_locked, locked, user, email):
    """design.md's four steps, read literally."""
    if excluded:
        return "approved", "skipped", "skipped", "exclusion", EXCLUDED_BECAUSE
    nobody_there = user is None or not user.strip()
    nobody_can_answer = (locked or nobody_there) and not show_locked
    end_user = "pending" if confirm and not nobody_can_answer else "skipped"
    email_check = "pending" if email else "skipped"
    if end_user == "skipped" and email_check == "skipped":
        if not confirm:
            reason = REASON_NOT_REQUIRED
        else:
            reason = REASON_LOCKED if locked else REASON_NOBODY
        return "approved", "skipped", "skipped", "policy", reason
    return "pending", end_user, email_check, None, None


COMBINATIONS = list(itertools.product(
    [False, True],                    # excluded (the device or its group)
    [False, True],                    # Show confirmation at the remote end
    [False, True],                    # Show confirmation in locked and logged off devices
    [False, True],                    # device locked
    ["alice", None, "", "   "],       # logged_in_user: set / None / blank
    [False, True],                    # Require email authorization
    [(60, 180), (10, 3600), (600, 30)],  # (confirmation, email) timeouts
))


def _combo_id(combo):
    excluded, confirm, show_locked, locked, user, email, (t1, t2) = combo
    return "-".join([
        "excl" if excluded else "incl", "confirm" if confirm else "noconfirm",
        "showlocked" if show_locked else "hidelocked", "locked" if locked else "unlocked",
        {None: "nouser", "": "emptyuser", "   ": "blankuser"}.get(user, "user"),
        "email" if email else "noemail", f"{t1}s-{t2}s"])


@pytest.mark.parametrize("combo", COMBINATIONS, ids=[_combo_id(c) for c in COMBINATIONS])
def test_every_combination_plans_as_the_design_says(combo):
    excluded, confirm, show_locked, locked, user, email, (t_confirm, t_email) = combo
    plan = plan_request(policy(excluded=excluded, confirm=confirm, show_locked=show_locked,
                               locked=locked, user=user, email=email,
                               confirm_timeout=t_confirm, email_timeout=t_email), NOW)
    status, end_user, email_check, decided_by, reason = expected_plan(
        excluded, confirm, show_locked, locked, user, email)
    assert (plan.status, plan.end_user, plan.email) == (status, end_user, email_check)
    assert (plan.decided_by, plan.decision_reason) == (decided_by, reason)
    end_user_deadline = NOW + t_confirm * SECOND if end_user == "pending" else None
    email_deadline = NOW + t_email * SECOND if email_check == "pending" else None
    assert (plan.end_user_deadline, plan.email_deadline) == (end_user_deadline,
                                                             email_deadline)
    if status == "pending":
        assert plan.decided_at is None
        assert plan.expires_at == max(d for d in (end_user_deadline, email_deadline) if d)
    else:  # decided at once, at creation
        assert plan.decided_at == NOW and plan.expires_at == NOW


def test_expires_at_is_the_latest_deadline_whichever_check_owns_it():
    long_prompt = plan_request(policy(confirm=True, email=True, confirm_timeout=600,
                                      email_timeout=30), NOW)
    assert long_prompt.expires_at == long_prompt.end_user_deadline == NOW + 600 * SECOND
    assert long_prompt.email_deadline == NOW + 30 * SECOND
    defaults = plan_request(policy(confirm=True, email=True), NOW)
    assert defaults.end_user_deadline == NOW + 60 * SECOND
    assert defaults.expires_at == defaults.email_deadline == NOW + 180 * SECOND


# --- refusal: who may still decide ----------------------------------------------------

EXPIRES = NOW + 180 * SECOND
END_USER_DEADLINE = NOW + 60 * SECOND


@pytest.mark.parametrize("status, at, check_deadline, expected", [
    ("pending", NOW, None, None),
    ("pending", EXPIRES - timedelta(microseconds=1), None, None),
    ("pending", EXPIRES, None, ExpiredError),
    ("pending", EXPIRES + SECOND, None, ExpiredError),
    ("timed_out", NOW, None, ExpiredError),          # a job already marked it
    ("approved", EXPIRES + SECOND, None, ExpiredError),
    ("denied", EXPIRES, None, ExpiredError),
    ("approved", NOW, None, AlreadyDecidedError),
    ("denied", EXPIRES - SECOND, None, AlreadyDecidedError),
    ("cancelled", NOW, None, AlreadyDecidedError),
    # The end user's prompt closes at its own, earlier deadline...
    ("pending", END_USER_DEADLINE - SECOND, END_USER_DEADLINE, None),
    ("pending", END_USER_DEADLINE, END_USER_DEADLINE, ExpiredError),
    ("pending", END_USER_DEADLINE + SECOND, END_USER_DEADLINE, ExpiredError),
    ("approved", END_USER_DEADLINE + SECOND, END_USER_DEADLINE, ExpiredError),
    ("approved", END_USER_DEADLINE - SECOND, END_USER_DEADLINE, AlreadyDecidedError),
    # ...while the email links still decide until expires_at.
    ("pending", END_USER_DEADLINE + SECOND, None, None),
])
def test_refusal(status, at, check_deadline, expected):
    refused = refusal(status, EXPIRES, at, check_deadline)
    if expected is None:
        assert refused is None
    else:
        assert type(refused) is expected
        assert not hasattr(refused, "status")  # HTTP statuses are the boundary's business
        assert refused.code == ("expired" if expected is ExpiredError else "already_decided")
        assert refused.message


@pytest.mark.parametrize("status, at, expected", [
    ("pending", EXPIRES - timedelta(microseconds=1), "pending"),
    ("pending", EXPIRES, "timed_out"),
    ("pending", EXPIRES + timedelta(days=1), "timed_out"),
    ("approved", EXPIRES + SECOND, "approved"),
    ("denied", EXPIRES + SECOND, "denied"),
    ("cancelled", EXPIRES + SECOND, "cancelled"),
    ("timed_out", NOW, "timed_out"),
])
def test_effective_status_reads_an_overdue_pending_request_as_timed_out(status, at,
                                                                        expected):
    assert effective_status(status, EXPIRES, at) is Status(expected)


# --- the checks as the technician reads them ------------------------------------------


@pytest.mark.parametrize("status, end_user, email, at, expected", [
    ("pending", "pending", "pending", NOW, ("pending", "pending")),
    ("pending", "pending", "pending", END_USER_DEADLINE, ("timed_out", "pending")),
    ("pending", "pending", "pending", EXPIRES, ("timed_out", "timed_out")),
    ("pending", "skipped", "pending", EXPIRES - SECOND, ("skipped", "pending")),
    ("timed_out", "pending", "pending", NOW, ("timed_out", "timed_out")),
    ("approved", "accepted", "pending", NOW, ("accepted", "skipped")),
    ("denied", "declined", "pending", NOW, ("declined", "skipped")),
    ("approved", "pending", "allowed", NOW, ("skipped", "allowed")),
    ("denied", "pending", "denied", NOW, ("skipped", "denied")),
    ("approved", "pending", "pending", NOW, ("skipped", "skipped")),   # portal approver
    ("cancelled", "pending", "pending", NOW, ("skipped", "skipped")),
    ("approved", "skipped", "skipped", NOW, ("skipped", "skipped")),   # policy
])
def test_check_states(status, end_user, email, at, expected):
    states = check_states(status=status, end_user=end_user, email=email,
                          end_user_deadline=END_USER_DEADLINE if end_user != "skipped"
                          else None,
                          email_deadline=EXPIRES if email != "skipped" else None, now=at)
    assert states == (EndUserCheck(expected[0]), EmailCheck(expected[1]))


# --- seconds left and outcome texts ---------------------------------------------------


@pytest.mark.parametrize("left, expected", [
    (timedelta(seconds=180), 180),
    (timedelta(seconds=59, milliseconds=1), 60),      # a started second counts
    (timedelta(milliseconds=1), 1),
    (timedelta(0), 0),
    (-SECOND, 0),
    (-timedelta(days=2), 0),
])
def test_seconds_left_rounds_up_and_never_goes_negative(left, expected):
    assert seconds_left(NOW + left, NOW) == expected


def test_seconds_left_without_a_deadline_is_zero():
    assert seconds_left(None, NOW) == 0


@pytest.mark.parametrize("status, decided_by, expected", [
    ("approved", "end_user", MSG_APPROVED),
    ("approved", "approver@example.com", MSG_APPROVED),
    ("approved", "policy", MSG_APPROVED),
    ("approved", "exclusion", MSG_APPROVED),
    ("denied", "end_user", MSG_END_USER_DECLINED),
    ("denied", "approver@example.com", "The request was denied by approver@example.com."),
    ("timed_out", None, MSG_TIMED_OUT),
    ("cancelled", None, MSG_CANCELLED),
    ("pending", None, None),
])
def test_outcome_messages_are_the_exact_texts(status, decided_by, expected):
    assert outcome_message(status, decided_by) == expected


def test_a_decided_plan_reads_approved_with_no_checks_left():
    plan = plan_request(policy(confirm=True, locked=True), NOW)
    assert check_states(status=plan.status, end_user=plan.end_user, email=plan.email,
                        end_user_deadline=plan.end_user_deadline,
                        email_deadline=plan.email_deadline, now=NOW) == (
        EndUserCheck.SKIPPED, EmailCheck.SKIPPED)
    assert outcome_message(plan.status, plan.decided_by) == MSG_APPROVED
    assert effective_status(plan.status, plan.expires_at, NOW + SECOND) is Status.APPROVED
