"""Department settings rules (portal/domain/settings.py) against design.md's contract:
labels, defaults, ranges, the message limit and the recipient list."""
from __future__ import annotations

import pytest
from factories import DESIGN_DEFAULTS, DESIGN_LABELS

from portal.domain import settings as rules
from portal.domain.settings import (
    DEFAULTS,
    LABELS,
    diff_settings,
    normalize_settings,
    parse_recipients,
    validate_settings,
)

# design.md, "Department settings (form labels and defaults)", copied verbatim.


def values(**changes):
    return {**DEFAULTS, **changes}


# --- labels and defaults ---------------------------------------------------------------


def test_labels_are_design_md_labels_in_form_order():
    assert LABELS == DESIGN_LABELS
    assert list(LABELS) == list(DESIGN_LABELS)  # diff/audit order follows the form


@pytest.mark.parametrize("field, expected", sorted(DESIGN_DEFAULTS.items()))
def test_default_is_design_md_default(field, expected):
    assert DEFAULTS[field] == expected
    assert type(DEFAULTS[field]) is type(expected)


def test_default_message_is_sensible_and_fits():
    message = DEFAULTS["confirmation_message"]
    assert message.strip() == message
    assert 20 <= len(message) <= rules.MAX_MESSAGE_LENGTH
    assert "?" in message  # it asks the end user something


def test_every_field_has_a_default_and_defaults_are_valid():
    assert set(DEFAULTS) == set(LABELS)
    assert validate_settings(DEFAULTS) == {}


# --- ranges ----------------------------------------------------------------------------

RANGE_TABLE = [
    # field, low, high
    ("confirmation_timeout_seconds", 10, 600),
    ("email_authorization_timeout_seconds", 30, 3600),
    ("otp_expiration_minutes", 1, 1440),
    ("otp_min_interval_minutes", 1, 1440),
    ("escalate_after_seconds", 30, 3600),
]


@pytest.mark.parametrize("field, low, high", RANGE_TABLE)
@pytest.mark.parametrize("where", ["low", "high"])
def test_range_edges_are_accepted(field, low, high, where):
    value = low if where == "low" else high
    assert validate_settings(values(**{field: value})) == {}


@pytest.mark.parametrize("field, low, high", RANGE_TABLE)
@pytest.mark.parametrize("where", ["below", "above"])
def test_just_outside_the_range_is_rejected_with_the_range(field, low, high, where):
    value = low - 1 if where == "below" else high + 1
    errors = validate_settings(values(**{field: value}))
    assert errors == {field: [f"Enter a whole number from {low} to {high}."]}


@pytest.mark.parametrize("field", [f for f, _, _ in RANGE_TABLE])
@pytest.mark.parametrize("bad", ["60", 60.0, None, True])
def test_non_integers_are_rejected(field, bad):
    assert validate_settings(values(**{field: bad})) == {field: ["Enter a whole number."]}


def test_several_bad_fields_are_all_reported():
    errors = validate_settings(values(confirmation_timeout_seconds=9,
                                      otp_expiration_minutes=0,
                                      confirmation_message="x" * 501))
    assert set(errors) == {"confirmation_timeout_seconds", "otp_expiration_minutes",
                           "confirmation_message"}


# --- confirmation message --------------------------------------------------------------


def test_message_of_500_characters_is_accepted():
    assert validate_settings(values(confirmation_message="m" * 500)) == {}


def test_message_of_501_characters_is_rejected_with_its_length():
    errors = validate_settings(values(confirmation_message="m" * 501))
    assert errors == {"confirmation_message": [
        "Keep the message to 500 characters or fewer (it has 501)."]}


def test_a_shown_confirmation_needs_a_message():
    errors = validate_settings(values(is_confirmation_shown=True, confirmation_message="  \n"))
    assert errors == {"confirmation_message": ["Enter the message the end user will see."]}
    # Not shown: an empty message is harmless.
    assert validate_settings(values(is_confirmation_shown=False, confirmation_message="")) == {}


# --- recipients ------------------------------------------------------------------------


@pytest.mark.parametrize("typed", [
    "a@example.com, b@example.com",
    "a@example.com\nb@example.com",
    "a@example.com;b@example.com",
    "a@example.com\r\nb@example.com\n\n",
    "  a@example.com ,\n ; b@example.com  ",
])
def test_recipients_split_on_commas_newlines_and_semicolons(typed):
    assert parse_recipients(typed) == (["a@example.com", "b@example.com"], [])


def test_duplicate_recipients_are_dropped_case_insensitively_keeping_the_first():
    addresses, errors = parse_recipients("Ann@Example.com\nann@example.COM, ANN@EXAMPLE.COM")
    assert errors == []
    assert addresses == ["Ann@example.com"]


def test_empty_recipient_text_is_no_recipient():
    assert parse_recipients("") == ([], [])
    assert parse_recipients(" ,\n; ") == ([], [])


@pytest.mark.parametrize("bad", ["not-an-email", "bob@localhost", "a@b@example.com",
                                 "approver@"])
def test_invalid_recipient_message_quotes_the_address(bad):
    addresses, errors = parse_recipients(f"ok@example.com, {bad}")
    assert addresses == ["ok@example.com"]
    assert errors == [f"“{bad}” is not a valid email address."]


def test_each_invalid_recipient_is_reported():
    _, errors = parse_recipients("one, two@example.com, three")
    assert errors == ["“one” is not a valid email address.",
                      "“three” is not a valid email address."]


def test_a_very_long_invalid_address_is_shortened_in_the_message():
    bad = "x" * 200
    _, errors = parse_recipients(bad)
    assert errors == [f"“{'x' * 57}...” is not a valid email address."]


def addresses(n):
    return "\n".join(f"approver{i}@example.com" for i in range(n))


def test_twenty_recipients_are_accepted():
    parsed, errors = parse_recipients(addresses(20))
    assert len(parsed) == 20 and errors == []
    assert validate_settings(values(is_email_authorization_required=True,
                                    email_recipients=addresses(20))) == {}


def test_twenty_one_recipients_are_rejected():
    _, errors = parse_recipients(addresses(21))
    assert errors == ["Enter at most 20 recipients (you entered 21)."]
    assert validate_settings(values(email_recipients=addresses(21))) == {
        "email_recipients": ["Enter at most 20 recipients (you entered 21)."]}


def test_duplicates_do_not_count_towards_the_limit():
    typed = addresses(20) + "\n" + "APPROVER0@example.com"
    assert parse_recipients(typed)[1] == []


def test_email_authorization_without_recipient_is_rejected():
    errors = validate_settings(values(is_email_authorization_required=True,
                                      email_recipients=" \n "))
    assert errors == {"email_recipients": [
        "Enter at least one recipient to require email authorization."]}


def test_email_authorization_with_one_recipient_is_accepted():
    assert validate_settings(values(is_email_authorization_required=True,
                                    email_recipients="boss@example.com")) == {}


def test_invalid_recipient_is_rejected_even_when_email_authorization_is_off():
    errors = validate_settings(values(email_recipients="nobody"))
    assert errors == {"email_recipients": ["“nobody” is not a valid email address."]}


# --- normalisation and diff ------------------------------------------------------------


def test_normalize_stores_recipients_one_per_line_and_strips_the_message():
    stored = normalize_settings(values(
        email_recipients="a@Example.com, b@example.com;A@example.com",
        confirmation_message="  Allow?  \n"))
    assert stored["email_recipients"] == "a@example.com\nb@example.com"
    assert stored["confirmation_message"] == "Allow?"


def test_diff_lists_changed_fields_in_label_order():
    old = dict(DEFAULTS)
    new = values(otp_expiration_minutes=45, is_confirmation_shown=True,
                 email_recipients="a@example.com")
    assert diff_settings(old, new) == [
        ("is_confirmation_shown", False, True),
        ("email_recipients", "", "a@example.com"),
        ("otp_expiration_minutes", 30, 45),
    ]


def test_diff_of_identical_settings_is_empty():
    assert diff_settings(dict(DEFAULTS), dict(DEFAULTS)) == []


def test_diff_ignores_fields_missing_from_new_and_unknown_fields():
    old = dict(DEFAULTS)
    new = {"confirmation_timeout_seconds": 90, "not_a_setting": 1}
    assert diff_settings(old, new) == [("confirmation_timeout_seconds", 60, 90)]


def test_diff_reports_a_field_newly_set():
    assert diff_settings({}, {"is_otp_allowed": True}) == [("is_otp_allowed", None, True)]


@pytest.mark.parametrize("message", ["Allow?\u202eton od", "a\u2066b", "bell\x07", "nul\x00"])
def test_message_with_invisible_control_or_direction_characters_is_refused(message):
    errors = validate_settings({**DEFAULTS, "confirmation_message": message})
    assert errors["confirmation_message"] == ["Remove the control characters from the message."]


def test_message_keeps_line_breaks_and_tabs():
    assert validate_settings({**DEFAULTS, "confirmation_message": "Line one\n\tLine two"}) == {}
