"""The timeline of one session request or OTP access request (design.md "Session logs"):
every event oldest first in UTC, who decided or opened a link from which IP and browser,
each recipient's email delivery (queued, sent, failed with the reason); who may read it;
no secret on it or on the Sessions page."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from factories import NOW
from sqlalchemy import select

from portal.clock import FixedClock
from portal.domain.approvals import parse_choices
from portal.extensions import db
from portal.jobs import deliver_outbox
from portal.models import OutboxMessage
from portal.services import accounts, agents, decisions
from portal.services import requests as request_service
from portal.services.actors import CLI, Actor
from web.helpers import page
from web.session_logs_setup import (
    DEVICE,
    SALES_DEVICE,
    build_world,
    client_session_by_approval,
    device,
    remote_session,
    turn_on,
)

LINK = re.compile(r"Check Request: http://portal\.test(/approvals/\S+)")
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148 TimelineTest"
APPROVER_IP = "203.0.113.5"


@pytest.fixture
def clock():
    return FixedClock(NOW)


@pytest.fixture
def app_config(smtp_config, clock):
    return {**smtp_config, "CLOCK": clock, "MAIL_DEFAULT_SENDER": "gate@portal.test"}


@pytest.fixture
def world(make):
    return build_world(make)


def timeline_url(department, request_id, kind="requests"):
    return f"/departments/{department.id}/{kind}/{request_id}/timeline"


def event_rows(doc):
    table = doc.one("table", class_="timeline")
    return [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tr")[1:]]


def deliveries(doc):
    table = doc.one("table", class_="deliveries")
    return {tr.find_all("td")[0].text(): [td.text() for td in tr.find_all("td")]
            for tr in table.find_all("tr")[1:]}


def emailed_request(world):
    turn_on(world.qa, is_email_authorization_required=True,
            email_recipients="approver@example.com\nqa-admin@example.com")
    tech = accounts.find_user("tech@example.com")
    req = request_service.create_session_request(
        technician=tech, device_name=DEVICE, run_as="Administrator", reason="printer queue",
        actor=Actor.for_user(tech, "192.0.2.10"), now=NOW, base_url="http://portal.test")
    db.session.commit()
    links = {m.recipient: LINK.search(m.body_text).group(1) for m in db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.request_id == req.id))}
    return req, links


def test_a_session_requests_whole_story_oldest_first(client, auth, world, smtp, clock):
    req, links = emailed_request(world)
    auth.login("auditor@example.com")
    doc = page(client.get(timeline_url(world.qa, req.id)))
    assert deliveries(doc)["approver@example.com"][2] == "queued"
    assert deliveries(doc)["qa-admin@example.com"][2] == "queued"

    deliver_outbox(NOW + timedelta(seconds=1), limit=1)  # the first is accepted...
    smtp.handler.mode = "550"
    deliver_outbox(NOW + timedelta(seconds=2), limit=1)  # ...the second refused for good
    db.session.commit()
    clock.set(NOW + timedelta(seconds=40))
    auth.logout()
    auth.login("approver@example.com")
    headers = {"User-Agent": BROWSER}
    environ = {"REMOTE_ADDR": APPROVER_IP}
    assert client.get(links["approver@example.com"], headers=headers,
                      environ_base=environ).status_code == 200
    clock.set(NOW + timedelta(seconds=55))
    assert client.post(links["approver@example.com"], data={"decision": "allow"},
                       headers=headers, environ_base=environ).status_code == 200
    agent = Actor(label=f"device:{DEVICE}", client_ip="198.51.100.4")
    session = agents.start_remote_session(device=device(DEVICE), request_id=req.id,
                                          actor=agent, now=NOW + timedelta(seconds=70))
    agents.end_remote_session(device=device(DEVICE), session_id=session.id, actor=agent,
                              now=NOW + timedelta(minutes=12, seconds=10))
    db.session.commit()
    auth.logout()

    auth.login("auditor@example.com")
    response = client.get(timeline_url(world.qa, req.id))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    doc = page(response)
    assert doc.one("body").get("hx-history") == "false"
    assert doc.one("h1").text() == f"Session request #{req.id}"
    rows = event_rows(doc)
    assert [r[1] for r in rows] == [
        "Requested", "Email queued", "Email queued", "Email sent", "Email failed",
        "Link opened", "Decided", "Session started", "Session ended"]
    times = [r[0] for r in rows]
    assert times == sorted(times) and times[0] == "2026-11-22 10:15:30 UTC"
    requested, *_ = rows
    assert requested[2] == "by tech@example.com as Administrator — reason: printer queue"
    assert requested[3:5] == ["tech@example.com", "192.0.2.10"]
    failed = rows[4]
    assert failed[2].startswith("to qa-admin@example.com — SMTPRecipientsRefused")
    assert "550" in failed[2] and "5.1.1 Mailbox unavailable" in failed[2]
    opened, decided = rows[5], rows[6]
    assert opened[2:] == ["approver@example.com’s link", "approver@example.com",
                          APPROVER_IP, BROWSER]
    assert decided[2].startswith("Approved by approver@example.com")
    assert decided[3:] == ["approver@example.com", APPROVER_IP, BROWSER]
    assert rows[7][3:5] == [f"device:{DEVICE}", "198.51.100.4"]
    # Each recipient's delivery, failed with its reason.
    mail = deliveries(doc)
    assert mail["approver@example.com"][2] == "sent"
    assert mail["qa-admin@example.com"][2] == "failed"
    assert "5.1.1 Mailbox unavailable" in mail["qa-admin@example.com"][6]
    # The summary: who, as whom, how it ended.
    facts = doc.one("dl", class_="facts").text()
    assert "Approved — approved by approver@example.com" in facts
    assert "(11 min 00 s)" in facts  # 10:16:40 → 10:27:40
    assert doc.find("time").get("datetime") == "2026-11-22T10:15:30Z"


def test_a_timed_out_request_and_the_end_user_decisions_read_so(client, auth, world):
    from portal.jobs import expire_overdue

    turn_on(world.qa, is_email_authorization_required=True,
            email_recipients="approver@example.com")
    tech = accounts.find_user("tech@example.com")
    req = request_service.create_session_request(
        technician=tech, device_name=DEVICE, actor=Actor.for_user(tech), now=NOW,
        base_url="http://portal.test")
    db.session.commit()
    expire_overdue(NOW + timedelta(minutes=5))
    db.session.commit()
    auth.login("auditor@example.com")
    doc = page(client.get(timeline_url(world.qa, req.id)))
    rows = event_rows(doc)
    assert [r[1] for r in rows][-1] == "Timed out" and rows[-1][3] == "system"
    assert deliveries(doc)["approver@example.com"][2] == "cancelled"
    assert "Timed out" in doc.one("dl", class_="facts").text()
    assert "none started" in doc.one("dl", class_="facts").text()


def test_an_otp_access_requests_story_with_its_code_and_client_session(client, auth, world):
    ask_id, session, _code = client_session_by_approval(world.qa, DEVICE,
                                                        user_agent=BROWSER)
    auth.login("auditor@example.com")
    # The client session's row on Sessions links here.
    sessions = page(client.get(f"/departments/{world.qa.id}/sessions"))
    row = sessions.one("tr", id=f"client-session-{session.id}")
    assert row.one("a").get("href") == timeline_url(world.qa, ask_id, "otp-requests")
    doc = page(client.get(timeline_url(world.qa, ask_id, "otp-requests")))
    assert doc.one("h1").text() == f"One-time password request #{ask_id}"
    rows = event_rows(doc)
    labels = [r[1] for r in rows]
    assert labels[0] in ("Requested", "Email queued")
    assert "Decided" in labels and labels[-1] == "Client session started"
    decided = rows[labels.index("Decided")]
    assert decided[2].startswith("Approved by approver@example.com")
    assert decided[3:] == ["approver@example.com", "203.0.113.9", BROWSER]
    assert rows[-1][2] == "jsmith (j.smith@example.com)"
    mail = deliveries(doc)
    code_mail = [r for r in mail.values() if r[1] == "one-time password"]
    assert len(code_mail) == 1 and "j.smith@example.com" not in code_mail[0][0]  # masked
    assert {r[1] for r in mail.values()} == {"approval request", "one-time password"}
    assert "jsmith (j.smith@example.com)" in doc.one("dl", class_="facts").text()


def test_a_long_browser_string_is_cut_to_one_short_line(client, auth, world, clock):
    req, links = emailed_request(world)
    clock.set(NOW + timedelta(seconds=5))
    client.get(links["approver@example.com"], headers={"User-Agent": "A" * 600})
    auth.login("auditor@example.com")
    doc = page(client.get(timeline_url(world.qa, req.id)))
    opened = [r for r in event_rows(doc) if r[1] == "Link opened"][0]
    assert opened[3] == "anonymous" and 0 < len(opened[5]) <= 200


# --- who may read it -----------------------------------------------------------------


@pytest.mark.parametrize("email", ["auditor@example.com", "qa-admin@example.com",
                                   "admin@example.com", "approver@example.com",
                                   "tech@example.com"])
def test_readers_and_the_requests_own_technician_read_it(client, auth, world, email):
    req, _ = remote_session("tech@example.com", DEVICE, NOW)
    auth.login(email)
    response = client.get(timeline_url(world.qa, req.id))
    assert response.status_code == 200
    assert "Session started" in response.get_data(as_text=True)


def test_a_technician_reads_only_their_own_requests_and_no_otp_story(client, auth, world):
    req, _ = remote_session("tech@example.com", DEVICE, NOW)
    ask_id, _session, _code = client_session_by_approval(world.qa, DEVICE)
    auth.login("tech2@example.com")
    assert client.get(timeline_url(world.qa, req.id)).status_code == 404
    assert client.get(timeline_url(world.qa, ask_id, "otp-requests")).status_code == 403
    auth.logout()
    auth.login("tech@example.com")
    doc = page(client.get(timeline_url(world.qa, req.id)))
    assert doc.one("p", class_="breadcrumb").one("a").get("href") == f"/requests/{req.id}"
    assert client.get(f"/departments/{world.qa.id}/sessions").status_code == 403


def test_nothing_of_another_department_by_id(client, auth, world):
    qa_req, _ = remote_session("tech@example.com", DEVICE, NOW)
    sales_req, _ = remote_session("sales-tech@example.com", SALES_DEVICE, NOW)
    ask_id, _session, _code = client_session_by_approval(world.qa, DEVICE)
    for email in ("sales-auditor@example.com", "sales-tech@example.com"):
        auth.login(email)
        assert client.get(timeline_url(world.qa, qa_req.id)).status_code == 403
        assert client.get(timeline_url(world.qa, ask_id, "otp-requests")).status_code == 403
        # Their own department's URL with another department's request id: not found.
        assert client.get(timeline_url(world.sales, qa_req.id)).status_code == 404
        auth.logout()
    auth.login("auditor@example.com")
    assert client.get(timeline_url(world.qa, sales_req.id)).status_code == 404
    assert client.get(timeline_url(world.sales, sales_req.id)).status_code == 403
    assert client.get(timeline_url(world.qa, 999999)).status_code == 404
    assert client.get(timeline_url(world.qa, 999999, "otp-requests")).status_code == 404
    auth.logout()
    auth.login("admin@example.com")
    assert client.get(timeline_url(world.sales, qa_req.id)).status_code == 404
    assert client.get(timeline_url(world.sales, ask_id, "otp-requests")).status_code == 404


# --- no secrets ----------------------------------------------------------------------


def test_no_link_token_api_token_or_one_time_password_on_these_pages(client, auth, world,
                                                                      clock):
    req, links = emailed_request(world)
    clock.set(NOW + timedelta(seconds=5))
    client.get(links["approver@example.com"])  # "link opened"
    ask_id, _session, used_code = client_session_by_approval(world.qa, DEVICE)
    # A second code, still valid and unused (its sealed copy is in the database).
    _ask2, _s2, fresh_code = client_session_by_approval(
        world.qa, DEVICE, username="mlee", email="m.lee@example.com", at=NOW + timedelta(hours=2))
    user_token = accounts.create_user_token(user=accounts.find_user("tech@example.com"),
                                            actor=CLI, now=NOW)
    db.session.commit()
    secrets = [token.split("/approvals/")[1] for token in links.values()]
    secrets += [user_token, used_code, fresh_code, *world.tokens.values()]
    assert all(len(s) >= 8 for s in secrets)
    auth.login("admin@example.com")
    urls = [f"/departments/{world.qa.id}/sessions", timeline_url(world.qa, req.id),
            timeline_url(world.qa, ask_id, "otp-requests"),
            timeline_url(world.qa, _ask2, "otp-requests")]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.get_data(as_text=True)
        for secret in secrets:
            assert secret not in body, (url, secret)


def test_counted_allows_a_wrong_number_and_a_report_read_so(client, auth, world):
    turn_on(world.qa, is_email_authorization_required=True,
            email_recipients="approver@example.com\nqa-admin@example.com",
            approvals_required=2, is_number_matching_required=True)
    tech = accounts.find_user("tech@example.com")

    def new_request():
        req = request_service.create_session_request(
            technician=tech, device_name=DEVICE, reason="Ticket INC-4411: disk full",
            actor=Actor.for_user(tech), now=NOW, base_url="http://portal.test")
        db.session.commit()
        return req

    counted = new_request()
    approver = accounts.find_user("approver@example.com")
    decisions.decide_in_portal(user=approver, request_id=counted.id, decision="allow",
                               comment="checked the ticket", number=counted.match_number,
                               actor=Actor.for_user(approver), now=NOW)
    db.session.commit()
    wrong = new_request()
    other = next(n for n in parse_choices(wrong.match_choices) if n != wrong.match_number)
    decisions.decide_in_portal(user=approver, request_id=wrong.id, decision="allow",
                               number=other, actor=Actor.for_user(approver), now=NOW)
    db.session.commit()
    reported = new_request()
    decisions.decide_in_portal(user=approver, request_id=reported.id, decision="report",
                               actor=Actor.for_user(approver), now=NOW)
    db.session.commit()
    auth.login("auditor@example.com")
    rows = event_rows(page(client.get(timeline_url(world.qa, counted.id))))
    assert ["Allow counted", "1 of 2 approvals — by approver@example.com — checked the ticket"
            ] in [r[1:3] for r in rows]
    rows = event_rows(page(client.get(timeline_url(world.qa, wrong.id))))
    assert [f"{other} picked; the request is denied"] == [
        r[2] for r in rows if r[1] == "Wrong number picked"]
    rows = event_rows(page(client.get(timeline_url(world.qa, reported.id))))
    note = next(r[2] for r in rows if r[1] == "Reported as unexpected")
    assert note.startswith("by approver@example.com; new requests of tech@example.com to "
                           "this device refused until ")
