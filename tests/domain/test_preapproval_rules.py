"""Pre-approval windows (portal/domain/preapproval.py and the policy's step after
exclusions): what Allow offers, what it accepts, when a window is live, and what the
approved request says."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from portal.domain import preapproval as rules
from portal.domain.errors import InvalidInputError
from portal.domain.requests import PolicyInput, Status, plan_request

NOW = datetime(2026, 12, 1, 14, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("max_hours, required, offered", [
    (0, 1, ()),                     # off
    (1, 1, (1,)),
    (4, 1, (1, 2, 3, 4)),
    (24, 1, tuple(range(1, 25))),
    (8, 2, ()),                     # more than one approval required: not offered
    (8, 5, ()),
])
def test_allow_offers_whole_hours_up_to_the_setting_with_one_approval(max_hours, required,
                                                                      offered):
    assert rules.hours_offered(max_hours, required) == offered


@pytest.mark.parametrize("value, hours", [
    (None, None), ("", None), ("1", 1), ("4", 4), (" 3 ", 3), (2, 2),
])
def test_a_picked_window_is_read_from_a_form_or_json(value, hours):
    assert rules.parse_hours(value, (1, 2, 3, 4)) == hours


@pytest.mark.parametrize("value", ["5", "0", "-1", "1.5", "two", "²", True, 1.0, "123",
                                   [1], 25])
def test_anything_else_is_refused_on_the_field(value):
    with pytest.raises(InvalidInputError) as caught:
        rules.parse_hours(value, (1, 2, 3, 4))
    assert caught.value.field_errors == {
        "preapproval_hours": ["Pick a whole number of hours from 1 to 4, or none."]}


def test_a_window_where_none_is_offered_is_refused():
    with pytest.raises(InvalidInputError) as caught:
        rules.parse_hours("1", ())
    assert caught.value.field_errors == {
        "preapproval_hours": ["Pre-approval is not offered for this request."]}
    assert rules.parse_hours("", ()) is None


@pytest.mark.parametrize("expires_in, revoked, live", [
    (timedelta(hours=1), False, True),
    (timedelta(seconds=1), False, True),
    (timedelta(0), False, False),        # at its end it is over
    (-timedelta(seconds=1), False, False),
    (timedelta(hours=1), True, False),   # revoked
])
def test_a_window_is_live_until_it_expires_or_is_revoked(expires_in, revoked, live):
    revoked_at = NOW - timedelta(minutes=1) if revoked else None
    assert rules.is_live(NOW + expires_in, revoked_at, NOW) is live


def test_the_window_ends_whole_hours_after_the_allow_and_the_reason_names_both():
    until = rules.window_end(NOW, 3)
    assert until == datetime(2026, 12, 1, 17, 0, tzinfo=timezone.utc)
    assert rules.decision_reason("ann@example.com", until) == \
        "pre-approved by ann@example.com until 2026-12-01 17:00 UTC"
    assert [rules.hours_label(h) for h in (1, 2)] == ["1 hour", "2 hours"]


def policy(**changes) -> PolicyInput:
    values = dict(is_confirmation_shown=True, confirmation_timeout_seconds=60,
                  is_shown_when_locked=False, is_email_authorization_required=True,
                  email_authorization_timeout_seconds=180, is_locked=False,
                  logged_in_user="alice")
    return PolicyInput(**{**values, **changes})


@pytest.mark.parametrize("changes, decided_by, reason", [
    ({"pre_approval": "pre-approved by ann@example.com until 2026-12-01 17:00 UTC"},
     "pre_approval", "pre-approved by ann@example.com until 2026-12-01 17:00 UTC"),
    # Exclusions come first.
    ({"pre_approval": "pre-approved by ann@example.com until 2026-12-01 17:00 UTC",
      "exclusion": "device excluded from session confirmation"},
     "exclusion", "device excluded from session confirmation"),
    ({}, None, None),  # no window: the checks as configured
])
def test_a_live_window_approves_at_once_right_after_exclusions(changes, decided_by, reason):
    plan = plan_request(policy(**changes), NOW)
    assert (plan.decided_by, plan.decision_reason) == (decided_by, reason)
    assert plan.status is (Status.PENDING if decided_by is None else Status.APPROVED)
    if decided_by:
        assert (plan.end_user.value, plan.email.value, plan.expires_at) == (
            "skipped", "skipped", NOW)
