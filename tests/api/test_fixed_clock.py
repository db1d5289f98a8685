"""Web and API on a fixed clock: the app's one clock is injectable, so a request's times
are exact and its deadline passes when the test says so, not when the machine does."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from api_setup import RECIPIENTS, assert_error, bearer, build_world, configure

from portal.clock import FixedClock

START = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)


@pytest.fixture
def app_config():
    return {"CLOCK": FixedClock(START)}


@pytest.fixture
def clock(app):
    return app.extensions["clock"]


def test_times_come_from_the_app_clock_and_deadlines_pass_when_it_moves(client, make, clock,
                                                                        auth):
    w = build_world(make)
    configure(w.qa, is_email_authorization_required=True,
              email_recipients=", ".join(RECIPIENTS))
    created = client.post("/api/v1/session-requests", json={"device": w.device.name},
                          headers=bearer(w.tech_token))
    assert created.status_code == 201
    body = created.get_json()
    assert (body["created_at"], body["expires_at"], body["seconds_left"]) == (
        "2026-11-22T10:15:30.123Z", "2026-11-22T10:18:30.123Z", 180)
    path = f"/api/v1/session-requests/{body['id']}"

    clock.advance(179.5)
    assert client.get(path, headers=bearer(w.tech_token)).get_json()["seconds_left"] == 1
    clock.advance(0.5)  # exactly at expires_at: over, whether or not a job has run
    late = client.get(path, headers=bearer(w.tech_token)).get_json()
    assert (late["status"], late["seconds_left"], late["decided_at"]) == (
        "timed_out", 0, "2026-11-22T10:18:30.123Z")

    make.user("portal-approver@example.com", "approver", w.qa)
    auth.login("portal-approver@example.com")
    refused = client.post(f"/requests/{body['id']}/decide", data={"decision": "allow"})
    assert refused.status_code == 303  # back to the pending list, with the reason flashed
    cancel = client.post(f"{path}/cancel", headers=bearer(w.tech_token))
    assert assert_error(cancel, 410)["code"] == "expired"


def test_a_page_reads_the_clock_once(client, make, clock, auth):
    w = build_world(make)
    configure(w.qa, is_email_authorization_required=True,
              email_recipients=", ".join(RECIPIENTS))
    created = client.post("/api/v1/session-requests", json={"device": w.device.name},
                          headers=bearer(w.tech_token)).get_json()
    auth.login(w.tech.email)
    clock.advance(timedelta(seconds=30).total_seconds())
    page = client.get(f"/requests/{created['id']}").get_data(as_text=True)
    assert 'data-seconds-left="150"' in page
