"""The session logs' filter, page keys and how sessions read — no app, no database."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from portal.domain.log_filters import (
    approved_by_label,
    duration_text,
    parse_log_filter,
    parse_time_key,
    time_key,
)

STATES = ("running", "ended")


def test_a_full_filter_reads_back_into_the_same_url():
    args = {"from": "2026-11-01", "to": "2026-11-22", "device": " WIN-1 ",
            "person": "a@example.com", "state": "running"}
    found = parse_log_filter(args, choices=STATES)
    assert not found.errors
    assert (found.date_from, found.date_to) == (date(2026, 11, 1), date(2026, 11, 22))
    assert found.starts_at == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert found.ends_before == datetime(2026, 11, 23, tzinfo=timezone.utc)  # To included
    assert found.query_args() == {**args, "device": "WIN-1"}
    assert parse_log_filter(found.query_args(), choices=STATES) == found


def test_nothing_set_is_no_filter():
    found = parse_log_filter({}, choices=STATES)
    assert not found.is_set and found.query_args() == {} and not found.errors
    assert found.starts_at is None and found.ends_before is None


@pytest.mark.parametrize("args, field", [
    ({"from": "22.11.2026"}, "from"), ({"to": "2026-13-01"}, "to"),
    ({"from": "2026-11-02", "to": "2026-11-01"}, "to"), ({"state": "paused"}, "state"),
    ({"device": "x" * 255}, "device"), ({"person": "a\x00b"}, "person"),
    ({"from": "٢٠٢٦-١١-٠١"}, "from"),
])
def test_bad_values_are_left_out_with_a_message_for_their_field(args, field):
    found = parse_log_filter(args, choices=STATES)
    assert list(found.errors) == [field]
    assert field not in found.query_args()


def test_the_audit_logs_action_field_reads_the_same_way():
    found = parse_log_filter({"action": "request.decided"}, choices=None,
                             choice_key="action", choice_label="Action")
    assert found.choice == "request.decided"
    assert found.query_args() == {"action": "request.decided"}


def test_page_keys_round_trip_and_anything_else_is_no_key():
    at = datetime(2026, 11, 22, 10, 15, 30, 123456, tzinfo=timezone.utc)
    assert parse_time_key(time_key(at, 42)) == (at, 42)
    for raw in (None, "", "x", "1-0", "-1-2", "1-2-3", "1" * 19 + "-1", "1-" + "9" * 11):
        assert parse_time_key(raw) is None


@pytest.mark.parametrize("decided_by, label", [
    ("end_user", "end user"), ("policy", "policy"), ("exclusion", "exclusion"),
    ("pre_approval", "pre-approval"), ("ann@example.com", "ann@example.com"), (None, "—")])
def test_approved_by_reads_as_the_design_says(decided_by, label):
    assert approved_by_label(decided_by) == label


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (42, "42 s"), (60, "1 min 00 s"), (307, "5 min 07 s"),
    (7507, "2 h 05 min 07 s"), (-5, "0 s")])
def test_durations(seconds, text):
    assert duration_text(seconds) == text
