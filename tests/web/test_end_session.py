""""End session" (design.md, "Ending a running session"): approvers and department admins
end a running remote session from the Sessions page or the device page, through a
confirmation page (a GET that changes nothing) with an optional reason; the device's
agent learns it on its next prompts poll and reports the end; "Ended by" and the
timeline say who ended it."""
from __future__ import annotations

from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import select

from portal.clock import FixedClock
from portal.extensions import db
from portal.models import AuditEvent, RemoteSession

from .helpers import page, snapshot
from .session_logs_setup import (CLOCK_AT, DEVICE, OTHER_DEVICE, SALES_DEVICE, build_world,
                                 remote_session)

BROWSER = "Mozilla/5.0 (iPhone; approver's phone)"


@pytest.fixture
def app_config():
    return {"CLOCK": FixedClock(CLOCK_AT)}


@pytest.fixture
def world(make):
    return build_world(make)


def end_url(world, session, department=None):
    return f"/departments/{(department or world.qa).id}/sessions/{session.id}/end"


def sessions_url(world):
    return f"/departments/{world.qa.id}/sessions"


def stored(session_id) -> RemoteSession:
    db.session.expire_all()
    return db.session.get(RemoteSession, session_id)


def events(action):
    db.session.expire_all()
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


@pytest.mark.parametrize("email", ["approver@example.com", "qa-admin@example.com",
                                   "admin@example.com"])
def test_end_session_from_the_sessions_page_asks_first_and_records_who_and_why(
        client, auth, world, email):
    _req, session = remote_session("tech@example.com", DEVICE, NOW)
    auth.login(email)
    listing = page(client.get(sessions_url(world)))
    button = listing.one("a", id=f"end-session-{session.id}")
    assert button.text() == "End session" and button.get("href") == end_url(world, session)

    before = snapshot()
    confirm = client.get(end_url(world, session))
    assert confirm.status_code == 200 and snapshot() == before  # a GET changes nothing
    form = page(confirm).one("form", action=end_url(world, session))
    assert form.one("button", type="submit").text() == "Yes, end the session"
    assert "End this session?" in confirm.get_data(as_text=True)

    response = client.post(end_url(world, session), data={"reason": "  Suspicious activity "},
                           headers={"User-Agent": BROWSER})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(sessions_url(world))
    row = stored(session.id)
    assert (row.end_requested_by, row.end_reason, row.ended_at) == (
        email, "Suspicious activity", None)
    assert row.end_requested_at == CLOCK_AT
    [event] = events("session.end_requested")
    assert (event.actor, event.client_ip, event.target_type) == (
        email, "127.0.0.1", "session_request")
    assert event.details["reason"] == "Suspicious activity"
    assert event.details["user_agent"] == BROWSER
    assert event.details["remote_session_id"] == session.id

    # The list now says it is ending, and offers no second press.
    listing = page(client.get(sessions_url(world)))
    assert not listing.find("a", id=f"end-session-{session.id}")
    assert f"ending: asked by {email}" in listing.text()


def test_a_second_press_and_an_ended_session_are_409_and_change_nothing(client, auth, world):
    _req, session = remote_session("tech@example.com", DEVICE, NOW)
    _req2, ended = remote_session("tech2@example.com", OTHER_DEVICE, NOW,
                                  ended=NOW + timedelta(minutes=5))
    auth.login("approver@example.com")
    assert client.post(end_url(world, session), data={}).status_code == 303
    row = stored(session.id)
    assert row.end_reason is None  # no reason given: none stored

    before = snapshot()
    again = client.post(end_url(world, session), data={"reason": "again"})
    assert again.status_code == 409
    assert "already asked to end this session" in again.get_data(as_text=True)
    finished = client.post(end_url(world, ended), data={})
    assert finished.status_code == 409
    assert "This session has already ended." in finished.get_data(as_text=True)
    assert snapshot() == before
    assert len(events("session.end_requested")) == 1


@pytest.mark.parametrize("reason, message", [
    ("x" * 501, "Keep the reason to 500 characters (it has 501)."),
    ("two\nlines", "Keep the reason to one line, without control characters."),
])
def test_a_bad_reason_is_422_naming_the_field_and_nothing_changes(client, auth, world,
                                                                  reason, message):
    _req, session = remote_session("tech@example.com", DEVICE, NOW)
    auth.login("qa-admin@example.com")
    before = snapshot()
    response = client.post(end_url(world, session), data={"reason": reason})
    assert response.status_code == 422
    body = page(response)
    assert body.one("p", id="end-reason-error").text() == message
    assert body.one("input", id="end-reason").get("aria-invalid") == "true"
    assert snapshot() == before


@pytest.mark.parametrize("email", ["auditor@example.com", "tech@example.com",
                                   "sales-auditor@example.com"])
def test_auditors_and_technicians_cannot_end_sessions(client, auth, world, email):
    _req, session = remote_session("tech@example.com", DEVICE, NOW)
    auth.login(email)
    if email == "auditor@example.com":  # reads the list, without the button
        listing = page(client.get(sessions_url(world)))
        assert listing.find("tr", id=f"remote-session-{session.id}")
        assert not listing.find("a", id=f"end-session-{session.id}")
    before = snapshot()
    assert client.get(end_url(world, session)).status_code == 403
    assert client.post(end_url(world, session), data={}).status_code == 403
    assert snapshot() == before


def test_another_departments_session_is_not_found_through_this_department(client, auth,
                                                                            world):
    _req, sales_session = remote_session("sales-tech@example.com", SALES_DEVICE, NOW)
    auth.login("approver@example.com")
    before = snapshot()
    # Through QA's URL: no such session in QA; through Sales': not QA's approver's.
    assert client.post(end_url(world, sales_session), data={}).status_code == 404
    assert client.post(end_url(world, sales_session, world.sales),
                       data={}).status_code == 403
    assert client.get(f"/departments/{world.sales.id}/sessions").status_code == 403
    assert snapshot() == before


def test_end_session_from_the_device_page_comes_back_to_it(client, auth, world):
    from web.session_logs_setup import device

    _req, session = remote_session("tech@example.com", DEVICE, NOW, run_as="Administrator")
    device_url = f"/departments/{world.qa.id}/devices/{device(DEVICE).id}"
    auth.login("approver@example.com")
    shown = page(client.get(device_url))
    row = shown.one("tr", id=f"remote-session-{session.id}")
    assert "tech@example.com" in row.text() and "Administrator" in row.text()
    link = row.one("a", id=f"end-session-{session.id}")
    confirm = page(client.get(link.get("href")))
    assert confirm.one("input", name="next").get("value") == device_url
    response = client.post(end_url(world, session), data={"next": device_url,
                                                          "reason": "wrong machine"})
    assert response.status_code == 303 and response.headers["Location"].endswith(device_url)
    assert "ending: asked by approver@example.com" in page(client.get(device_url)).text()
    # A foreign `next` is not followed.
    _req, other = remote_session("tech2@example.com", OTHER_DEVICE, NOW)
    response = client.post(end_url(world, other), data={"next": "https://evil.example/"})
    assert response.headers["Location"].endswith(sessions_url(world))


def test_the_agents_report_names_who_ended_it_on_the_list_and_the_timeline(client, auth,
                                                                           world):
    req, session = remote_session("tech@example.com", DEVICE, NOW)
    by_itself, alone = remote_session("tech2@example.com", OTHER_DEVICE, NOW,
                                      ended=NOW + timedelta(minutes=1))
    auth.login("approver@example.com")
    client.post(end_url(world, session), data={"reason": "Not on the ticket"})
    token = world.tokens[DEVICE]
    polled = client.get("/api/v1/agent/prompts", headers={"Authorization": f"Bearer {token}"})
    assert polled.get_json()["end_sessions"] == [{"id": session.id,
                                                  "reason": "Not on the ticket"}]
    ended = client.post(f"/api/v1/agent/sessions/{session.id}/end",
                        headers={"Authorization": f"Bearer {token}"})
    assert ended.status_code == 200
    assert stored(session.id).ended_by == "approver@example.com"
    assert stored(alone.id).ended_by == "device"

    listing = page(client.get(sessions_url(world)))
    ended_by = {row.get("id"): row.one("td", data_label="Ended by").text()
                for row in listing.find_all("tr") if row.get("id", "").startswith("remote")}
    assert ended_by == {f"remote-session-{session.id}": "approver@example.com",
                        f"remote-session-{alone.id}": "device"}

    timeline = page(client.get(f"/departments/{world.qa.id}/requests/{req.id}/timeline"))
    text = timeline.text()
    assert "End of session requested" in text
    assert (f"by approver@example.com — remote session #{session.id} — reason: Not on the "
            "ticket") in text
    assert "ended by approver@example.com" in text


def test_approvers_find_the_sessions_pages_from_the_pending_list(client, auth, world):
    auth.login("approver@example.com")
    links = page(client.get("/requests/pending")).one("p", id="running-sessions-links")
    assert [(a.text(), a.get("href")) for a in links.find_all("a")] == [
        ("QA Team · Sessions", f"{sessions_url(world)}?state=running")]
