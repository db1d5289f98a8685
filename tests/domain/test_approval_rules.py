"""Approvals that resist fatigue and fraud (portal/domain/approvals.py; design.md): the
required reason, the comment, N distinct Allows, the match number and its choices, the
cool-down after a report. Fixed datetimes and a seeded source of randomness only."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from portal.domain import approvals as rules
from portal.domain.errors import InvalidInputError, NumberRequiredError, ReasonRequiredError
from portal.domain.settings import DEFAULTS, validate_settings

T0 = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)

# --- reason --------------------------------------------------------------------------

REASONS = [
    ("Ticket INC-100042", True),
    ("  printer01 ", False),          # 9 characters once trimmed
    ("printer 01", True),             # exactly 10, 9 letters/digits
    (".", False),
    ("..........", False),            # 10 characters, no letters or digits
    ("-- ab -- -- --", False),        # 2 letters only
    ("-- abc -- --", True),           # 3 letters
    ("Überprüfung!", True),           # letters of any script count
    ("         x         ", False),   # trimmed to one character
    ("", False),
    (None, False),
]


@pytest.mark.parametrize("reason, ok", REASONS)
def test_what_a_required_reason_must_be(reason, ok):
    assert (rules.reason_problem(reason) is None) is ok
    if ok:
        rules.require_reason(reason, is_required=True)
    else:
        with pytest.raises(ReasonRequiredError) as caught:
            rules.require_reason(reason, is_required=True)
        assert caught.value.code == "reason_required"
        assert list(caught.value.field_errors) == ["reason"]


@pytest.mark.parametrize("reason", [None, "", "."])
def test_no_reason_is_needed_when_the_setting_is_off(reason):
    rules.require_reason(reason, is_required=False)


# --- comment -------------------------------------------------------------------------

COMMENTS = [
    (None, None),
    ("", None),
    ("   ", None),
    ("  Looks right, go ahead  ", "Looks right, go ahead"),
    ("x" * 500, "x" * 500),
    ("Café – ok ✓", "Café – ok ✓"),
]


@pytest.mark.parametrize("raw, cleaned", COMMENTS)
def test_a_comment_is_one_trimmed_line(raw, cleaned):
    assert rules.clean_comment(raw) == cleaned


BAD_COMMENTS = [
    "x" * 501,
    "first line\nsecond line",
    "carriage\rreturn",
    "a\ttab",
    "nul\x00",
    "bell\x07",
    "esc\x1b[31m",
    "bidi \u202eoverride",
    "line\u2028separator",
    42,
    ["list"],
]


@pytest.mark.parametrize("raw", BAD_COMMENTS)
def test_a_bad_comment_is_refused_naming_the_field(raw):
    with pytest.raises(InvalidInputError) as caught:
        rules.clean_comment(raw)
    assert list(caught.value.field_errors) == ["comment"]


# --- N of M --------------------------------------------------------------------------

TALLIES = [
    # required, allows in order -> received, decision
    (1, [], 0, "pending"),
    (1, ["a@x.test"], 1, "approved"),
    (2, ["a@x.test"], 1, "pending"),
    (2, ["a@x.test", "A@x.test"], 1, "pending"),  # the same person twice counts once
    (2, ["a@x.test", "b@x.test"], 2, "approved"),
    (3, ["a@x.test", "b@x.test"], 2, "pending"),
    (3, ["a@x.test", "b@x.test", "c@x.test"], 3, "approved"),
    (5, ["a", "b", "c", "d", "e"], 5, "approved"),
]


@pytest.mark.parametrize("required, allows, received, decision", TALLIES)
def test_n_distinct_allows_approve(required, allows, received, decision):
    tally = rules.Tally(required, 0, ())
    for who in allows:
        tally = rules.count_allow(tally, who)
    assert tally.received == received
    assert rules.decide_by_allows(tally) == decision
    assert tally.label() == f"{received} of {required} approvals"


def test_who_already_allowed_is_known_whatever_the_case():
    tally = rules.count_allow(rules.Tally(2, 0, ()), "Ann@X.test")
    assert rules.has_allowed(tally, "ann@x.test")
    assert not rules.has_allowed(tally, "bob@x.test")
    assert rules.parse_approvers("ann@x.test\nbob@x.test\n") == ("ann@x.test", "bob@x.test")
    assert rules.parse_approvers(None) == ()


# --- number matching -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(200))
def test_the_match_number_and_three_distinct_choices(seed):
    match, choices = rules.new_match(random.Random(seed).randrange)
    assert 10 <= match <= 99
    assert len(set(choices)) == 3 and match in choices
    assert all(10 <= c <= 99 for c in choices)
    assert list(choices) == sorted(choices)  # the position gives nothing away
    assert rules.parse_choices(rules.format_choices(choices)) == choices


def test_the_match_number_comes_from_secrets_by_default():
    seen = {rules.new_match()[0] for _ in range(300)}
    assert len(seen) > 30 and min(seen) >= 10 and max(seen) <= 99


@pytest.mark.parametrize("draws, match, choices", [
    ([0, 0, 0, 89, 45], 10, (10, 55, 99)),   # a repeated draw is drawn again
    ([89, 0, 1], 99, (10, 11, 99)),
])
def test_the_edges_of_the_range_are_reachable(draws, match, choices):
    source = iter(draws)
    assert rules.new_match(lambda n: next(source)) == (match, choices)


CHECKS = [
    # match, choices, number sent -> result (True match, False mismatch)
    (42, (17, 42, 88), 42, True),
    (42, (17, 42, 88), "42", True),
    (42, (17, 42, 88), " 42 ", True),
    (42, (17, 42, 88), 17, False),
    (42, (17, 42, 88), "88", False),
    (None, (), None, None),        # no matching on this request: nothing to check
    (None, (), 42, None),
]


@pytest.mark.parametrize("match, choices, number, result", CHECKS)
def test_checking_the_number(match, choices, number, result):
    assert rules.check_number(match, choices, number) is result


@pytest.mark.parametrize("number", [None, ""])
def test_a_missing_number_is_number_required(number):
    with pytest.raises(NumberRequiredError) as caught:
        rules.check_number(42, (17, 42, 88), number)
    assert caught.value.code == "number_required"
    assert list(caught.value.field_errors) == ["number"]


@pytest.mark.parametrize("number", [43, "43", 10, 99, "forty-two", "4.2", True, -42, [42],
                                    "٤٢", "1" * 50])
def test_a_number_not_among_the_choices_is_invalid(number):
    with pytest.raises(InvalidInputError) as caught:
        rules.check_number(42, (17, 42, 88), number)
    assert type(caught.value) is InvalidInputError
    assert list(caught.value.field_errors) == ["number"]


def test_a_mismatch_says_the_number_did_not_match():
    assert "number did not match" in rules.mismatch_reason(17)


# --- report and cool-down ------------------------------------------------------------

COOLDOWNS = [
    # minutes, seconds after the report -> retry_after
    (30, 0, 1800),
    (30, 1, 1799),
    (30, 1799.5, 1),
    (30, 1800, 0),
    (30, 4000, 0),
    (1, 59.001, 1),
    (1440, 0, 86400),
]


@pytest.mark.parametrize("minutes, after, expected", COOLDOWNS)
def test_the_cool_down_after_a_report(minutes, after, expected):
    until = rules.cooldown_until(T0, minutes)
    assert until == T0 + timedelta(minutes=minutes)
    assert rules.retry_after(until, T0 + timedelta(seconds=after)) == expected


@pytest.mark.parametrize("who, text", [
    ("ann@example.com", "The request was reported as unexpected by ann@example.com."),
    ("the end user", "The request was reported as unexpected by the end user."),
])
def test_the_reported_outcome(who, text):
    assert rules.reported_outcome(who) == text


# --- the Approvals settings ----------------------------------------------------------

def settings(**changes):
    return {**DEFAULTS, **changes}


SETTINGS = [
    (dict(approvals_required=1), None),
    (dict(approvals_required=0), "approvals_required"),
    (dict(approvals_required=6), "approvals_required"),
    (dict(approvals_required=2), "approvals_required"),  # no recipients
    (dict(approvals_required=2, email_recipients="a@example.com"), "approvals_required"),
    (dict(approvals_required=2, email_recipients="a@example.com, b@example.com"), None),
    (dict(approvals_required=3, email_recipients="a@example.com\nb@example.com\nA@example.com"),
     "approvals_required"),  # the same address twice is one recipient
    (dict(report_cooldown_minutes=0), "report_cooldown_minutes"),
    (dict(report_cooldown_minutes=1441), "report_cooldown_minutes"),
    (dict(report_cooldown_minutes=1440), None),
    (dict(is_reason_required=True, is_number_matching_required=True), None),
]


@pytest.mark.parametrize("changes, field", SETTINGS)
def test_the_approvals_settings_ranges(changes, field):
    errors = validate_settings(settings(**changes))
    assert list(errors) == ([field] if field else [])
