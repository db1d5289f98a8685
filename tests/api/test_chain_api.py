"""The approval chain as the technician, the device and an auditor see it: `checks.email`
reads `waiting` until the approvers are asked, `expires_at` is fixed at creation, an end
user's accept after the prompt's own deadline is 410, the technician's page says "Nobody
answered at the device — asking the approvers", and the timeline shows the steps."""
from __future__ import annotations

from datetime import timedelta

import pytest
from api_setup import age, assert_error, bearer, build_world, configure, parse_iso, utcnow
from api_setup import with_email, with_prompt
from web.helpers import page as parsed

from portal.extensions import db
from portal.services import chain

URL = "/api/v1/session-requests"
ONCALL = "on-call@example.com"


@pytest.fixture
def w(make):
    w = build_world(make)
    with_prompt(w)
    with_email(w, is_fallback_to_email=True, escalation_recipients=ONCALL,
               escalate_after_seconds=30)
    make.user("auditor@example.com", "auditor", w.qa)
    db.session.commit()
    return w


def create(client, w):
    response = client.post(URL, json={"device": w.device.name}, headers=bearer(w.tech_token))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def read(client, w, request_id):
    return client.get(f"{URL}/{request_id}", headers=bearer(w.tech_token)).get_json()


def take_steps():
    taken, _ = chain.take_due_steps(utcnow(), base_url="http://portal.test")
    db.session.commit()
    return taken


def signed_in(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": "correct horse battery"}
                       ).status_code == 303
    return client


def test_the_email_check_waits_for_the_end_user_then_the_approvers_are_asked(app, client, w):
    obj = create(client, w)
    assert obj["checks"] == {"end_user": "pending", "email": "waiting"}
    assert parse_iso(obj["expires_at"]) - parse_iso(obj["created_at"]) == timedelta(
        seconds=240)  # the prompt's 60 s, then the approvers' 180 s
    prompts = client.get("/api/v1/agent/prompts", headers=bearer(w.device_token)).get_json()
    assert [p["id"] for p in prompts["prompts"]] == [obj["id"]]
    tech = signed_in(app, "tech@example.com")
    doc = parsed(tech.get(f"/requests/{obj['id']}"))
    assert "Not asked yet" in doc.one("ul", class_="checks").text()
    assert doc.find(id="request-progress") is None

    age(obj["id"], 61)  # the prompt's deadline has passed; no job has run yet
    late = client.post(f"/api/v1/agent/prompts/{obj['id']}", json={"decision": "accept"},
                       headers=bearer(w.device_token))
    assert assert_error(late, 410)["code"] == "expired"
    now_reads = read(client, w, obj["id"])
    assert (now_reads["status"], now_reads["checks"]) == (
        "pending", {"end_user": "timed_out", "email": "waiting"})
    prompts = client.get("/api/v1/agent/prompts", headers=bearer(w.device_token)).get_json()
    assert prompts["prompts"] == []

    assert take_steps() == [(obj["id"], "fallback")]
    after = read(client, w, obj["id"])
    assert after["checks"] == {"end_user": "timed_out", "email": "pending"}
    assert after["expires_at"] == now_reads["expires_at"] and after["status"] == "pending"
    assert 175 <= after["seconds_left"] <= 179
    doc = parsed(tech.get(f"/requests/{obj['id']}"))
    assert doc.one(id="request-progress").text() == (
        "Nobody answered at the device — asking the approvers")
    fragment = tech.get(f"/requests/{obj['id']}/status", headers={"HX-Request": "true"})
    assert "Nobody answered at the device — asking the approvers" in fragment.get_data(
        as_text=True)

    auditor = signed_in(app, "auditor@example.com")
    timeline = parsed(auditor.get(f"/departments/{w.qa.id}/requests/{obj['id']}/timeline"))
    rows = [[td.text() for td in tr.find_all("td")]
            for tr in timeline.one("table", class_="timeline").find_all("tr")[1:]]
    fallback = [r for r in rows if r[1] == "Asking the approvers (nobody answered at the "
                                            "device)"]
    assert len(fallback) == 1
    assert fallback[0][2] == ("to approver@example.com, second@example.com — the end user "
                              "didn't answer")


def test_an_end_user_answer_leaves_the_waiting_email_check_skipped(client, w):
    obj = create(client, w)
    answer = client.post(f"/api/v1/agent/prompts/{obj['id']}", json={"decision": "accept"},
                         headers=bearer(w.device_token))
    assert answer.status_code == 200
    assert answer.get_json()["checks"] == {"end_user": "accepted", "email": "skipped"}
    age(obj["id"], 61)
    assert take_steps() == []


def test_with_the_prompt_skipped_the_approvers_are_asked_at_once(client, w):
    configure(w.qa, is_shown_when_locked=False)
    w.device.is_locked = True
    db.session.commit()
    obj = create(client, w)
    assert obj["checks"] == {"end_user": "skipped", "email": "pending"}
    assert parse_iso(obj["expires_at"]) - parse_iso(obj["created_at"]) == timedelta(
        seconds=180)
