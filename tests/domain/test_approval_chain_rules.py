"""The approval chain's rules (design.md, "Fallback" and "Escalation"): the plan at
creation with "If the end user doesn't answer, ask the email approvers", the email check
as it reads, when escalation falls due, whom it mails and which links stay current. No
app, fixed clocks."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from portal.domain import chain
from portal.domain.requests import (
    MSG_FALLBACK,
    EmailCheck,
    EndUserCheck,
    PolicyInput,
    Status,
    check_label,
    check_states,
    plan_request,
    read_request,
)

NOW = datetime(2026, 12, 5, 9, 0, 0, 250000, tzinfo=timezone.utc)
S = timedelta(seconds=1)


def policy(*, fallback=True, confirm=True, email=True, locked=False, user="alice",
           show_locked=False):
    return PolicyInput(
        is_confirmation_shown=confirm, confirmation_timeout_seconds=60,
        is_shown_when_locked=show_locked, is_email_authorization_required=email,
        email_authorization_timeout_seconds=180, is_locked=locked, logged_in_user=user,
        is_fallback_to_email=fallback)


def test_with_fallback_the_approvers_wait_for_the_prompts_deadline():
    plan = plan_request(policy(), NOW)
    assert plan.status is Status.PENDING
    assert (plan.end_user, plan.email) == (EndUserCheck.PENDING, EmailCheck.WAITING)
    assert plan.end_user_deadline == NOW + 60 * S
    assert plan.fallback_due_at == NOW + 60 * S
    # Fixed now: the prompt's deadline plus the whole email timeout.
    assert plan.expires_at == plan.email_deadline == NOW + 240 * S
    assert not plan.is_fallback_now


@pytest.mark.parametrize("state", [{"locked": True}, {"user": None}])
def test_with_fallback_a_skipped_prompt_mails_the_approvers_at_once(state):
    plan = plan_request(policy(**state), NOW)
    assert (plan.end_user, plan.email) == (EndUserCheck.SKIPPED, EmailCheck.PENDING)
    assert plan.is_fallback_now and plan.fallback_due_at is None
    assert plan.expires_at == plan.email_deadline == NOW + 180 * S  # the email timeout alone
    assert plan.end_user_skipped_because.endswith("confirmation not shown")


@pytest.mark.parametrize("settings", [
    {"fallback": False},  # off: both checks run side by side, as before
    {"confirm": False},   # needs both checks on
])
def test_without_fallback_the_approvers_are_mailed_at_creation(settings):
    plan = plan_request(policy(**settings), NOW)
    assert plan.email is EmailCheck.PENDING
    assert plan.fallback_due_at is None and not plan.is_fallback_now
    assert plan.expires_at == NOW + 180 * S


def test_fallback_without_email_authorization_changes_nothing():
    plan = plan_request(policy(email=False), NOW)
    assert (plan.end_user, plan.email) == (EndUserCheck.PENDING, EmailCheck.SKIPPED)
    assert plan.expires_at == NOW + 60 * S and plan.fallback_due_at is None


@pytest.mark.parametrize("status, expected", [
    (Status.PENDING, EmailCheck.WAITING),
    (Status.APPROVED, EmailCheck.SKIPPED),   # the end user answered: never asked
    (Status.DENIED, EmailCheck.SKIPPED),
    (Status.CANCELLED, EmailCheck.SKIPPED),
    (Status.TIMED_OUT, EmailCheck.TIMED_OUT),
])
def test_a_waiting_email_check_reads(status, expected):
    _, email = check_states(status=status, end_user=EndUserCheck.PENDING,
                            email=EmailCheck.WAITING, end_user_deadline=NOW + 60 * S,
                            email_deadline=NOW + 240 * S, now=NOW)
    assert email is expected


def test_waiting_has_its_own_word():
    assert check_label("waiting", "email") == "Not asked yet"
    assert check_label("waiting", "email") != check_label("pending", "email")


def test_the_technician_reads_that_nobody_answered_only_while_pending():
    def read(status, mailed):
        return read_request(status=status, expires_at=NOW + 100 * S, end_user="timed_out",
                            email="pending", end_user_deadline=NOW - S,
                            email_deadline=NOW + 100 * S, decided_at=None, decided_by=None,
                            now=NOW, is_fallback_mailed=mailed)
    assert read("pending", True).progress == MSG_FALLBACK
    assert MSG_FALLBACK == "Nobody answered at the device — asking the approvers"
    assert read("pending", False).progress is None
    assert read("cancelled", True).progress is None


@pytest.mark.parametrize("addresses, after, expires_in, expected", [
    (["on-call@example.com"], 120, 180, 120),
    (["on-call@example.com"], 180, 180, None),  # would fall at the deadline: nobody in time
    (["on-call@example.com"], 300, 180, None),
    ([], 120, 180, None),                        # "Escalate to" empty: no escalation
    (["  "], 120, 180, None),
])
def test_escalation_falls_due_after_the_emails_went_out(addresses, after, expires_in,
                                                         expected):
    due = chain.escalation_due(mailed_at=NOW, escalate_after_seconds=after,
                               escalation_addresses=addresses,
                               expires_at=NOW + expires_in * S)
    assert due == (NOW + expected * S if expected is not None else None)


def test_escalation_mails_nobody_twice():
    targets = chain.addresses_to_mail(
        ["On-Call@example.com", "r1@example.com", "on-call@example.com", "lead@example.com"],
        already_asked=["R1@example.com"])
    assert targets == ["On-Call@example.com", "lead@example.com"]


@pytest.mark.parametrize("email, current", [
    ("r1@example.com", True), ("ON-CALL@example.com", True), ("gone@example.com", False)])
def test_escalation_addresses_are_recipients_for_the_link_rules(email, current):
    assert chain.is_current_recipient(email, ["r1@example.com"],
                                      ["on-call@example.com"]) is current


def test_which_step_a_due_request_takes():
    assert chain.step_kind("waiting") == chain.FALLBACK
    assert chain.step_kind("pending") == chain.ESCALATION


def test_a_reading_as_a_templates_context_keeps_its_values_as_they_are():
    from dataclasses import fields

    from portal.domain.approvals import Tally

    tally = Tally(2, 1, ("ann@example.com",))
    reading = read_request(status="pending", expires_at=NOW + 100 * S, end_user="pending",
                           email="pending", end_user_deadline=NOW + 50 * S,
                           email_deadline=NOW + 100 * S, decided_at=None, decided_by=None,
                           now=NOW, tally=tally)
    context = reading.as_context()
    assert list(context) == [field.name for field in fields(reading)]
    assert context["approvals"] is tally and not context["approvals"].is_reached
    assert context["status"] is Status.PENDING and context["seconds_left"] == 100
