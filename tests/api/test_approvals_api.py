"""The HTTP contract of approvals that resist fatigue and fraud (design.md): the request
object's `approvals` and `match_number`, the prompt's `reason` and `choices`, agent
decisions with `number` and `report`, 429 `reported` with Retry-After, and 422
`reason_required` / `number_required` — each bad input naming its field and changing
nothing."""
from __future__ import annotations

import pytest
from api_setup import (RECIPIENTS, assert_error, bearer, build_world, configure,
                       parse_iso, utcnow, with_email, with_prompt)
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AuditEvent, OutboxMessage, SessionRequest
from portal.services import accounts, decisions, mail

CREATE = "/api/v1/session-requests"
REASON = "Ticket INC-100042: printer"


@pytest.fixture
def w(make):
    w = build_world(make)
    make.user("head@example.com", "department_admin", w.qa)
    make.user(RECIPIENTS[1], "approver", w.qa)
    return w


def create(client, w, **body):
    body = {"device": w.device.name, "reason": REASON, **body}
    return client.post(CREATE, json=body, headers=bearer(w.tech_token))


def view(client, w, request_id):
    return client.get(f"{CREATE}/{request_id}", headers=bearer(w.tech_token)).get_json()


def prompts(client, w):
    return client.get("/api/v1/agent/prompts", headers=bearer(w.device_token)).get_json()[
        "prompts"]


def answer(client, w, request_id, **body):
    return client.post(f"/api/v1/agent/prompts/{request_id}", json=body,
                       headers=bearer(w.device_token))


def requests_count():
    return db.session.scalar(select(func.count()).select_from(SessionRequest))


def test_a_plain_request_reads_one_of_one_and_no_match_number(client, w):
    with_email(w)
    obj = create(client, w).get_json()
    assert obj["approvals"] == {"required": 1, "received": 0, "by": []}
    assert obj["match_number"] is None


@pytest.mark.parametrize("reason", [None, "", ".", "...........", "a  --  -.-b", " " * 20])
def test_a_required_reason_that_is_not_one_is_422_reason_required(client, w, reason):
    configure(w.qa, is_reason_required=True)
    response = create(client, w, reason=reason)
    error = assert_error(response, 422)
    assert error["code"] == "reason_required" and list(error["fields"]) == ["reason"]
    assert requests_count() == 0
    assert create(client, w).status_code == 201


def test_two_of_two_approvals_through_the_api(client, w):
    with_email(w, approvals_required=2)
    request_id = create(client, w).get_json()["id"]
    tokens = {m.recipient: mail.approval_links_in(m)[0].rsplit("/", 1)[1]
              for m in db.session.scalars(select(OutboxMessage))}
    first = decisions.find_link(tokens[RECIPIENTS[0]])
    decisions.decide_with_link(link=first, decision="allow", signed_in=w.approver,
                               actor=decisions.SYSTEM, now=utcnow(), comment="ok by me")
    db.session.commit()
    obj = view(client, w, request_id)
    assert (obj["status"], obj["approvals"]) == (
        "pending", {"required": 2, "received": 1, "by": [RECIPIENTS[0]]})
    second = decisions.find_link(tokens[RECIPIENTS[1]])
    decisions.decide_with_link(link=second, decision="allow",
                               signed_in=accounts.find_user(RECIPIENTS[1]),
                               actor=decisions.SYSTEM, now=utcnow(),
                               comment="Checked with the user")
    db.session.commit()
    obj = view(client, w, request_id)
    assert (obj["status"], obj["decided_by"], obj["decision_reason"]) == (
        "approved", RECIPIENTS[1], "Checked with the user")
    assert obj["approvals"] == {"required": 2, "received": 2, "by": RECIPIENTS}


def test_number_matching_on_the_technicians_side_and_at_the_device(client, w):
    with_prompt(w)
    configure(w.qa, is_number_matching_required=True)
    obj = create(client, w).get_json()
    match = obj["match_number"]
    assert isinstance(match, int) and 10 <= match <= 99
    [prompt] = prompts(client, w)
    assert prompt["reason"] == REASON
    assert "match_number" not in prompt
    choices = prompt["choices"]
    assert len(set(choices)) == 3 and match in choices

    # Bad input: named, 422, nothing changed.
    for body, code in [({"decision": "accept"}, "number_required"),
                       ({"decision": "accept", "number": None}, "number_required"),
                       ({"decision": "accept", "number": 100}, "invalid"),
                       ({"decision": "accept", "number": "abc"}, "invalid"),
                       ({"decision": "accept", "number": True}, "invalid")]:
        error = assert_error(answer(client, w, obj["id"], **body), 422)
        assert (error["code"], list(error["fields"])) == (code, ["number"]), body
    assert view(client, w, obj["id"])["status"] == "pending"

    response = answer(client, w, obj["id"], decision="accept", number=match)
    assert response.status_code == 200
    done = response.get_json()
    assert (done["status"], done["match_number"]) == ("approved", None)


def test_a_wrong_number_at_the_device_denies(client, w):
    with_prompt(w)
    configure(w.qa, is_number_matching_required=True)
    obj = create(client, w).get_json()
    wrong = next(c for c in prompts(client, w)[0]["choices"] if c != obj["match_number"])
    done = answer(client, w, obj["id"], decision="accept", number=wrong).get_json()
    assert (done["status"], done["decided_by"], done["checks"]["end_user"]) == (
        "denied", "end_user", "declined")
    assert "number did not match" in done["decision_reason"]
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "request.number_mismatch")) == 1


def test_a_report_at_the_device_then_429_reported_with_retry_after(client, w):
    with_prompt(w)
    configure(w.qa, report_cooldown_minutes=20)
    obj = create(client, w).get_json()
    done = answer(client, w, obj["id"], decision="report").get_json()
    assert (done["status"], done["decided_by"], done["checks"]["end_user"]) == (
        "denied", "end_user", "declined")
    assert done["outcome_message"] == \
        "The request was reported as unexpected by the end user."
    alert = db.session.scalar(select(OutboxMessage).where(
        OutboxMessage.recipient == "head@example.com"))
    assert w.device.name in alert.subject and "tech@example.com" in alert.subject

    before = requests_count()
    response = client.post(CREATE, json={"device": w.device.name, "reason": REASON},
                           headers={**bearer(w.tech_token), "User-Agent": "TechConsole/7.1"},
                           environ_base={"REMOTE_ADDR": "192.0.2.77"})
    error = assert_error(response, 429)
    refusal = db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "request.cooldown_refused"))
    assert (refusal.actor, refusal.client_ip, refusal.details["user_agent"]) == (
        "tech@example.com", "192.0.2.77", "TechConsole/7.1")
    assert error["code"] == "reported" and "UTC" in error["message"]
    retry = response.get_json()["retry_after"]
    assert 20 * 60 - 5 <= retry <= 20 * 60
    assert response.headers["Retry-After"] == str(retry)
    assert requests_count() == before
    # Another technician, or another device, is not held back.
    assert client.post(CREATE, json={"device": w.device.name, "reason": REASON},
                       headers=bearer(w.tech2_token)).status_code == 201
    assert create(client, w, device=w.device_b.name).status_code == 201
    # A second report of a decided request: 409.
    assert answer(client, w, obj["id"], decision="report").status_code == 409


@pytest.mark.parametrize("decision", ["Report", "allow", "", None, 1])
def test_an_unknown_agent_decision_is_400(client, w, decision):
    with_prompt(w)
    obj = create(client, w).get_json()
    assert_error(answer(client, w, obj["id"], decision=decision), 400)
    assert view(client, w, obj["id"])["status"] == "pending"


def test_times_of_a_counted_request_stay_iso(client, w):
    with_email(w, approvals_required=2)
    obj = create(client, w).get_json()
    parse_iso(obj["expires_at"])
