"""The technician console's API (design.md, "HTTP contract"): the request object, errors
as {"error": {"code", "message"}}, tokens, bad input, the long-poll and cancel."""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from api_setup import (
    ISO_MS,
    REQUEST_KEYS,
    age,
    assert_error,
    bearer,
    build_world,
    configure,
    parse_iso,
    utcnow,
    with_email,
    with_prompt,
)
from sqlalchemy import func, select, update

from portal.extensions import db
from portal.models import ApiToken, SessionRequest, User
from portal.services import accounts, departments
from portal.services import decisions
from portal.services import requests as service
from portal.services.actors import CLI, Actor

URL = "/api/v1/session-requests"


@pytest.fixture
def w(make):
    return build_world(make)


def ask(client, w, token=None, **payload):
    payload.setdefault("device", w.device.name)
    return client.post(URL, json=payload, headers=bearer(token or w.tech_token))


def count_requests():
    return db.session.scalar(select(func.count(SessionRequest.id)))


# --- creating ---------------------------------------------------------------------------


def test_create_answers_201_with_exactly_the_request_object(client, w):
    with_prompt(w)
    with_email(w)
    response = ask(client, w, run_as="Administrator", reason="Printer queue stuck")
    assert response.status_code == 201
    obj = response.get_json()
    assert set(obj) == REQUEST_KEYS
    assert set(obj["checks"]) == {"end_user", "email"}
    assert isinstance(obj["id"], int)
    assert {k: obj[k] for k in ("status", "device", "technician", "run_as", "reason",
                                "decided_at", "decided_by", "decision_reason",
                                "outcome_message")} == {
        "status": "pending", "device": "WIN-0859G9I39J0", "technician": "tech@example.com",
        "run_as": "Administrator", "reason": "Printer queue stuck", "decided_at": None,
        "decided_by": None, "decision_reason": None, "outcome_message": None}
    assert obj["checks"] == {"end_user": "pending", "email": "pending"}
    created, expires = parse_iso(obj["created_at"]), parse_iso(obj["expires_at"])
    assert expires - created == timedelta(seconds=180)  # the latest deadline
    assert abs(created - utcnow()) < timedelta(seconds=5)
    assert obj["seconds_left"] == 180
    again = client.get(f"{URL}/{obj['id']}", headers=bearer(w.tech_token)).get_json()
    assert again == {**obj, "seconds_left": again["seconds_left"]}
    assert 178 <= again["seconds_left"] <= 180


def test_an_excluded_device_is_approved_at_once(client, w):
    with_prompt(w)
    departments.add_exclusion(department=w.qa, target=f"device:{w.device.id}", actor=CLI,
                              now=utcnow())
    db.session.commit()
    obj = ask(client, w).get_json()
    assert (obj["status"], obj["decided_by"], obj["outcome_message"], obj["seconds_left"],
            obj["checks"]) == ("approved", "exclusion", "The session will begin shortly.", 0,
                               {"end_user": "skipped", "email": "skipped"})
    assert ISO_MS.match(obj["decided_at"]) and obj["decided_at"] == obj["created_at"]


def test_a_locked_device_is_approved_by_policy_with_the_reason(client, w):
    configure(w.qa, is_confirmation_shown=True)
    client.put("/api/v1/agent/state", json={"locked": True, "logged_in_user": "alice"},
               headers=bearer(w.device_token))
    obj = ask(client, w).get_json()
    assert (obj["status"], obj["decided_by"], obj["decision_reason"]) == (
        "approved", "policy", "device locked; confirmation not shown")


# --- tokens -------------------------------------------------------------------------------


def _revoke(token):
    db.session.execute(update(ApiToken).where(ApiToken.id == accounts.find_token(token).id)
                       .values(revoked_at=utcnow()))
    db.session.commit()


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer"}, {"Authorization": "Bearer   "},
    {"Authorization": "Basic dGVjaDpwdw=="}, {"Authorization": "Bearer not-a-token"},
    "revoked", "device", "disabled"])
@pytest.mark.parametrize("method", ["create", "get", "cancel"])
def test_no_bad_revoked_or_device_token_is_401(client, w, headers, method):
    req = service.create_session_request(technician=w.tech, device_name=w.device.name,
                                         actor=CLI, now=utcnow(), base_url="http://x")
    db.session.commit()
    if headers == "revoked":
        _revoke(w.tech_token)
        headers = bearer(w.tech_token)
    elif headers == "device":
        headers = bearer(w.device_token)
    elif headers == "disabled":
        db.session.get(User, w.tech.id).is_enabled = False
        db.session.commit()
        headers = bearer(w.tech_token)
    response = {
        "create": lambda: client.post(URL, json={"device": w.device.name}, headers=headers),
        "get": lambda: client.get(f"{URL}/{req.id}", headers=headers),
        "cancel": lambda: client.post(f"{URL}/{req.id}/cancel", headers=headers),
    }[method]()
    assert assert_error(response, 401)["code"] == "unauthorized"
    assert count_requests() == 1
    assert db.session.get(SessionRequest, req.id).status == "approved"


@pytest.mark.parametrize("data", [
    "{not json", '{"device": 5}', '{"device": "   "}', '{"device": "WIN", "run_as": "a\\nb"}',
    '{"device": "NO-SUCH-PC"}', json.dumps({"device": "x" * (70 * 1024)})])
@pytest.mark.parametrize("token", ["unknown", "revoked", "device", "disabled"])
def test_a_bad_token_is_told_before_anything_about_the_body(client, w, data, token):
    """A create checks its token in the device's query, after reading the body; a bad
    body (400, 422, 413) or an unknown device (404) still answers 401 for a bad token."""
    if token == "revoked":
        _revoke(w.tech_token)
    elif token == "disabled":
        db.session.get(User, w.tech.id).is_enabled = False
        db.session.commit()
    headers = bearer({"unknown": "not-a-token", "revoked": w.tech_token,
                      "device": w.device_token, "disabled": w.tech_token}[token])
    response = client.post(URL, data=data, content_type="application/json",
                           headers=headers)
    assert assert_error(response, 401)["code"] == "unauthorized"
    assert count_requests() == 0


def test_a_create_records_its_tokens_use(client, w):
    db.session.execute(update(ApiToken).values(last_used_at=None))
    db.session.commit()
    assert ask(client, w).status_code == 201
    last_used = db.session.scalar(select(ApiToken.last_used_at)
                                  .where(ApiToken.id == accounts.find_token(w.tech_token).id))
    assert last_used is not None and utcnow() - last_used < timedelta(seconds=5)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("data, content_type", [
    ("{not json", "application/json"),
    ('["WIN-0859G9I39J0"]', "application/json"),
    ("null", "application/json"),
    ('"WIN-0859G9I39J0"', "application/json"),
    ('{"device": "WIN-0859G9I39J0"}', "text/plain"),
    ("", "application/json"),
    ("{}", "application/json"),
    ('{"device": 5}', "application/json"),
    ('{"device": null}', "application/json"),
    ('{"device": "WIN-0859G9I39J0", "run_as": []}', "application/json"),
    ('{"device": "WIN-0859G9I39J0", "reason": {"a": 1}}', "application/json"),
    ('{"device": "WIN-0859G9I39J0", "reason": 12}', "application/json"),
    (b'{"device": "\xff\xfe"}', "application/json"),
])
def test_malformed_bodies_and_wrong_types_are_400(client, w, data, content_type):
    response = client.post(URL, data=data, content_type=content_type,
                           headers=bearer(w.tech_token))
    assert_error(response, 400)
    assert count_requests() == 0


@pytest.mark.parametrize("payload", [
    {"reason": "r" * 1001}, {"run_as": "u" * 257}, {"run_as": "bad\nname"},
    {"device": "   "}, {"device": "WIN\x00X"}, {"reason": "a\x00b"}])
def test_values_that_fail_validation_are_422(client, w, payload):
    assert assert_error(ask(client, w, **payload), 422)["code"] == "invalid"
    assert count_requests() == 0


@pytest.mark.parametrize("device", ["NO-SUCH-PC", "SUPPORT-PC-1"])
def test_an_unknown_or_foreign_device_is_404(client, w, device):
    assert_error(ask(client, w, device=device), 404)
    assert count_requests() == 0


@pytest.mark.parametrize("role", ["approver", "auditor", "department_admin"])
def test_a_member_who_may_not_ask_for_sessions_there_gets_404(client, w, make, role):
    user = make.user(f"{role}-only@example.com", role, w.qa)
    token = accounts.create_user_token(user=user, actor=CLI, now=utcnow())
    db.session.commit()
    response = client.post(URL, json={"device": w.device.name}, headers=bearer(token))
    assert_error(response, 404)
    assert count_requests() == 0


def test_a_technician_elsewhere_gets_404_and_an_admin_may_ask_anywhere(client, w, make):
    make.user("tech@example.com", "technician", w.support)  # a technician of both now
    assert ask(client, w, device=w.foreign.name).status_code == 201
    admin = make.user("root@example.com", "admin")
    token = accounts.create_user_token(user=admin, actor=CLI, now=utcnow())
    db.session.commit()
    response = client.post(URL, json={"device": w.foreign.name}, headers=bearer(token))
    assert response.status_code == 201
    assert response.get_json()["technician"] == "root@example.com"
    assert_error(client.post(URL, json={"device": w.foreign.name},
                             headers=bearer(w.tech2_token)), 404)


def test_a_body_over_64_kib_is_413(client, w):
    body = json.dumps({"device": w.device.name, "reason": "x" * (64 * 1024)})
    response = client.post(URL, data=body, content_type="application/json",
                           headers=bearer(w.tech_token))
    assert assert_error(response, 413)["code"] == "too_large"
    assert count_requests() == 0


def test_another_technicians_or_an_unknown_request_is_404(client, w):
    rid = ask(client, w).get_json()["id"]
    for url in (f"{URL}/{rid}", f"{URL}/{rid + 1000}", f"{URL}/0"):
        assert_error(client.get(url, headers=bearer(w.tech2_token)), 404)
    assert_error(client.post(f"{URL}/{rid}/cancel", headers=bearer(w.tech2_token)), 404)
    for huge in (2**31, 2**63 + 5):  # beyond the id column: still just unknown
        assert_error(client.get(f"{URL}/{huge}", headers=bearer(w.tech_token)), 404)
        assert_error(client.post(f"{URL}/{huge}/cancel", headers=bearer(w.tech_token)), 404)
    assert client.get(f"{URL}/{rid}", headers=bearer(w.tech_token)).status_code == 200


@pytest.mark.parametrize("wait", ["-1", "31", "100", "abc", "1.5", "", " 1", "1e1", "²",
                                  "٣", "99999999999999999999"])
def test_wait_outside_0_to_30_or_not_a_number_is_400(client, w, wait):
    rid = ask(client, w).get_json()["id"]
    response = client.get(f"{URL}/{rid}", query_string={"wait": wait},
                          headers=bearer(w.tech_token))
    assert_error(response, 400)


# --- the long-poll ------------------------------------------------------------------------


def test_wait_answers_soon_after_another_thread_decides(app, client, w):
    with_email(w)
    rid = ask(client, w).get_json()["id"]
    approver_id = w.approver.id
    decided, failures = [], []

    def decide_later():
        try:
            time.sleep(0.5)
            with app.app_context():
                approver = db.session.get(User, approver_id)
                decisions.decide_in_portal(user=approver, request_id=rid, decision="deny",
                                         actor=Actor.for_user(approver), now=utcnow())
                decided.append(time.monotonic())  # the GET can't see it before this
                db.session.commit()
        except Exception as exc:  # noqa: BLE001 (surfaced in the test thread)
            failures.append(exc)

    thread = threading.Thread(target=decide_later)
    started = time.monotonic()
    thread.start()
    response = client.get(f"{URL}/{rid}?wait=5", headers=bearer(w.tech_token))
    answered = time.monotonic()
    thread.join(10)
    assert not failures and decided
    assert answered - started < 3
    assert 0 <= answered - decided[0] < 1.0
    obj = response.get_json()
    assert (obj["status"], obj["decided_by"], obj["outcome_message"]) == (
        "denied", "approver@example.com", "The request was denied by approver@example.com.")
    assert obj["checks"] == {"end_user": "skipped", "email": "skipped"}


def test_wait_on_an_unchanged_request_answers_pending_after_the_wait(client, w):
    with_email(w)
    rid = ask(client, w).get_json()["id"]
    started = time.monotonic()
    response = client.get(f"{URL}/{rid}", query_string={"wait": "1"},
                          headers=bearer(w.tech_token))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5
    assert response.status_code == 200 and response.get_json()["status"] == "pending"


def test_wait_on_a_decided_request_answers_at_once(client, w):
    rid = ask(client, w).get_json()["id"]  # approved by policy
    started = time.monotonic()
    response = client.get(f"{URL}/{rid}?wait=30", headers=bearer(w.tech_token))
    assert time.monotonic() - started < 1
    assert response.get_json()["status"] == "approved"


# --- cancel, outcomes, deadlines -----------------------------------------------------------


def test_cancel_then_cancel_again_is_409(client, w):
    with_email(w)
    rid = ask(client, w).get_json()["id"]
    response = client.post(f"{URL}/{rid}/cancel", headers=bearer(w.tech_token))
    assert response.status_code == 200
    obj = response.get_json()
    assert set(obj) == REQUEST_KEYS
    assert (obj["status"], obj["outcome_message"], obj["decided_by"]) == (
        "cancelled", "The request was cancelled.", None)
    assert ISO_MS.match(obj["decided_at"])
    again = client.post(f"{URL}/{rid}/cancel", headers=bearer(w.tech_token))
    assert assert_error(again, 409)["code"] == "already_decided"
    assert client.get(f"{URL}/{rid}", headers=bearer(w.tech_token)).get_json() \
        ["status"] == "cancelled"


def test_an_overdue_request_reads_timed_out_without_a_scheduler(client, w):
    with_prompt(w)
    with_email(w)
    rid = ask(client, w).get_json()["id"]
    age(rid, 181)
    obj = client.get(f"{URL}/{rid}", headers=bearer(w.tech_token)).get_json()
    assert (obj["status"], obj["outcome_message"], obj["seconds_left"], obj["decided_by"]) \
        == ("timed_out", "The Session Confirmation request has timed out.", 0, None)
    assert obj["checks"] == {"end_user": "timed_out", "email": "timed_out"}
    assert obj["decided_at"] is not None and ISO_MS.match(obj["decided_at"])
    late = client.post(f"{URL}/{rid}/cancel", headers=bearer(w.tech_token))
    assert assert_error(late, 410)["code"] == "expired"
    db.session.expire_all()
    assert db.session.get(SessionRequest, rid).status == "timed_out"
    after = client.get(f"{URL}/{rid}?wait=2", headers=bearer(w.tech_token)).get_json()
    assert after["status"] == "timed_out" and after["decided_at"] is not None


def test_the_checks_and_seconds_left_follow_the_clock(client, w):
    with_prompt(w)
    with_email(w)
    rid = ask(client, w).get_json()["id"]
    age(rid, 70)  # the prompt's 60 s are over; the email's 180 s are not
    obj = client.get(f"{URL}/{rid}", headers=bearer(w.tech_token)).get_json()
    assert obj["status"] == "pending"
    assert obj["checks"] == {"end_user": "timed_out", "email": "pending"}
    assert 105 <= obj["seconds_left"] <= 110


def test_an_approvers_comment_is_the_decision_reason(client, w):
    with_email(w)
    rid = ask(client, w).get_json()["id"]
    decisions.decide_in_portal(user=w.approver, request_id=rid, decision="allow",
                             actor=CLI, now=utcnow(), comment="Go ahead")
    db.session.commit()
    obj = client.get(f"{URL}/{rid}", headers=bearer(w.tech_token)).get_json()
    assert (obj["status"], obj["decided_by"], obj["decision_reason"],
            obj["outcome_message"]) == ("approved", "approver@example.com", "Go ahead",
                                        "The session will begin shortly.")
