"""The device agent's API (design.md, "HTTP contract"): state reports, the end user's
prompts and answers, and remote sessions. The device is always the token's."""
from __future__ import annotations

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
from portal.models import ApiToken, AuditEvent, Device, RemoteSession, SessionRequest
from portal.services import requests as service
from portal.services import decisions
from portal.services.actors import CLI

STATE = "/api/v1/agent/state"
PROMPTS = "/api/v1/agent/prompts"
SESSIONS = "/api/v1/agent/sessions"
PROMPT_KEYS = {"id", "message", "technician", "run_as", "reason", "expires_at", "seconds_left",
               "choices"}


@pytest.fixture
def w(make):
    return build_world(make)


def ask(w, device=None, **kwargs):
    """A technician's request, through the service (the console's API is tested apart)."""
    req = service.create_session_request(
        technician=w.tech, device_name=(device or w.device).name, actor=CLI, now=utcnow(),
        base_url="http://portal.test", **kwargs)
    db.session.commit()
    return req.id


def answer(client, token, request_id, decision):
    return client.post(f"{PROMPTS}/{request_id}", json={"decision": decision},
                       headers=bearer(token))


def events(action):
    return db.session.scalar(select(func.count(AuditEvent.seq))
                             .where(AuditEvent.action == action))


# --- state ----------------------------------------------------------------------------------


def test_state_is_saved_with_last_seen_at(client, w):
    before = utcnow()
    response = client.put(STATE, json={"locked": True, "logged_in_user": "CORP\\alice"},
                          headers=bearer(w.device_token))
    assert response.status_code == 204 and response.get_data() == b""
    db.session.expire_all()
    device = db.session.get(Device, w.device.id)
    assert (device.is_locked, device.logged_in_user) == (True, "CORP\\alice")
    assert before - timedelta(seconds=1) <= device.last_seen_at <= utcnow()
    assert events("device.state_changed") == 1
    response = client.put(STATE, json={"locked": False, "logged_in_user": None},
                          headers=bearer(w.device_token))
    assert response.status_code == 204
    db.session.expire_all()
    device = db.session.get(Device, w.device.id)
    assert (device.is_locked, device.logged_in_user) == (False, None)
    assert db.session.get(Device, w.device_b.id).last_seen_at is None  # only the token's


@pytest.mark.parametrize("body", [
    {}, {"logged_in_user": "alice"}, {"locked": "yes"}, {"locked": 1}, {"locked": None},
    {"locked": True, "logged_in_user": 5}, {"locked": True, "logged_in_user": ["a"]},
    ["locked"], "locked"])
def test_bad_state_reports_are_400_and_change_nothing(client, w, body):
    response = client.put(STATE, json=body, headers=bearer(w.device_token))
    assert_error(response, 400)
    db.session.expire_all()
    assert db.session.get(Device, w.device.id).last_seen_at is None


def test_malformed_json_state_is_400(client, w):
    response = client.put(STATE, data="{locked: true", content_type="application/json",
                          headers=bearer(w.device_token))
    assert_error(response, 400)


def test_a_too_long_user_name_fails_validation(client, w):
    response = client.put(STATE, json={"locked": False, "logged_in_user": "a" * 257},
                          headers=bearer(w.device_token))
    assert_error(response, 422)


# --- prompts --------------------------------------------------------------------------------


def test_prompts_lists_only_this_devices_open_end_user_prompts(client, w):
    with_prompt(w)
    open_id = ask(w, run_as="Administrator", reason="Printer queue stuck")
    ask(w, device=w.device_b)                     # another device's
    late_id = ask(w)                              # its prompt is over
    age(late_id, 61)
    decided_id = ask(w)                           # already decided in the portal
    decisions.decide_in_portal(user=w.approver, request_id=decided_id, decision="allow",
                             actor=CLI, now=utcnow())
    db.session.commit()
    configure(w.qa, is_confirmation_shown=False)
    with_email(w)
    ask(w)                                        # email only: no prompt
    response = client.get(PROMPTS, headers=bearer(w.device_token))
    assert response.status_code == 200
    prompts = response.get_json()["prompts"]
    assert [p["id"] for p in prompts] == [open_id]
    prompt = prompts[0]
    assert set(prompt) == PROMPT_KEYS
    assert (prompt["message"], prompt["technician"], prompt["run_as"]) == (
        w.qa.settings.confirmation_message, "tech@example.com", "Administrator")
    req = db.session.get(SessionRequest, open_id)
    assert ISO_MS.match(prompt["expires_at"])
    expires_in = parse_iso(prompt["expires_at"]) - req.created_at  # to the millisecond
    assert abs(expires_in - timedelta(seconds=60)) < timedelta(milliseconds=1)
    assert 55 <= prompt["seconds_left"] <= 60


def test_a_prompt_past_its_deadline_is_gone_even_while_email_is_open(client, w):
    with_prompt(w)
    with_email(w)
    rid = ask(w)
    assert [p["id"] for p in client.get(PROMPTS, headers=bearer(w.device_token))
            .get_json()["prompts"]] == [rid]
    age(rid, 61)
    assert client.get(PROMPTS, headers=bearer(w.device_token)).get_json() == {"prompts": [],
                                                                           "end_sessions": []}


def test_the_first_fetch_of_a_prompt_is_audited_once(client, w):
    with_prompt(w)
    rid = ask(w)
    for _ in range(2):
        assert client.get(PROMPTS, headers=bearer(w.device_token)).status_code == 200
    shown = db.session.scalars(select(AuditEvent)
                               .where(AuditEvent.action == "prompt.shown")).all()
    assert len(shown) == 1
    assert (shown[0].actor, shown[0].target_id) == ("device:WIN-0859G9I39J0", str(rid))


# --- answering a prompt ------------------------------------------------------------------


def test_accept_approves_and_a_later_decline_is_409(client, w):
    with_prompt(w)
    with_email(w)
    rid = ask(w)
    response = answer(client, w.device_token, rid, "accept")
    assert response.status_code == 200
    obj = response.get_json()
    assert set(obj) == REQUEST_KEYS
    assert (obj["status"], obj["decided_by"], obj["checks"], obj["outcome_message"]) == (
        "approved", "end_user", {"end_user": "accepted", "email": "skipped"},
        "The session will begin shortly.")
    assert assert_error(answer(client, w.device_token, rid, "decline"), 409)["code"] \
        == "already_decided"
    db.session.expire_all()
    assert db.session.get(SessionRequest, rid).status == "approved"


def test_decline_denies_with_the_end_users_message(client, w):
    with_prompt(w)
    rid = ask(w)
    obj = answer(client, w.device_token, rid, "decline").get_json()
    assert (obj["status"], obj["outcome_message"]) == (
        "denied", "The end user has rejected the Session Confirmation Request")


@pytest.mark.parametrize("email, past", [(False, 61), (True, 61), (True, 181)])
def test_an_answer_after_the_prompts_deadline_is_410(client, w, email, past):
    with_prompt(w)
    if email:
        with_email(w)
    rid = ask(w)
    age(rid, past)
    assert assert_error(answer(client, w.device_token, rid, "accept"), 410)["code"] \
        == "expired"
    db.session.expire_all()
    still_open = email and past < 180
    assert db.session.get(SessionRequest, rid).status == (
        "pending" if still_open else "timed_out")


def test_another_devices_prompt_is_404(client, w):
    with_prompt(w)
    rid = ask(w)
    for token, request_id in ((w.device_b_token, rid), (w.foreign_token, rid),
                              (w.device_token, rid + 1000), (w.device_token, 2**31),
                              (w.device_token, 2**64)):
        assert_error(answer(client, token, request_id, "accept"), 404)
    db.session.expire_all()
    assert db.session.get(SessionRequest, rid).status == "pending"


@pytest.mark.parametrize("body", [{}, {"decision": "yes"}, {"decision": "allow"},
                                  {"decision": None}, {"decision": 1}, ["accept"]])
def test_a_bad_decision_is_400(client, w, body):
    with_prompt(w)
    rid = ask(w)
    response = client.post(f"{PROMPTS}/{rid}", json=body, headers=bearer(w.device_token))
    assert_error(response, 400)
    db.session.expire_all()
    assert db.session.get(SessionRequest, rid).status == "pending"


# --- remote sessions ----------------------------------------------------------------------


def start(client, token, request_id):
    return client.post(SESSIONS, json={"request_id": request_id}, headers=bearer(token))


def test_an_approved_request_starts_one_session_and_it_ends_once(client, w):
    rid = ask(w)  # approved by policy
    response = start(client, w.device_token, rid)
    assert response.status_code == 201
    sid = response.get_json()["id"]
    assert isinstance(sid, int)
    assert assert_error(start(client, w.device_token, rid), 409)
    assert db.session.scalar(select(func.count(RemoteSession.id))) == 1
    assert_error(client.post(f"{SESSIONS}/{sid}/end", headers=bearer(w.device_b_token)),
                 404)
    ended = client.post(f"{SESSIONS}/{sid}/end", headers=bearer(w.device_token))
    assert ended.status_code == 200 and ended.get_json()["id"] == sid
    assert_error(client.post(f"{SESSIONS}/{sid}/end", headers=bearer(w.device_token)), 409)
    assert_error(client.post(f"{SESSIONS}/{sid + 1000}/end",
                             headers=bearer(w.device_token)), 404)
    assert (events("session.started"), events("session.ended")) == (1, 1)


@pytest.mark.parametrize("state", ["pending", "denied", "prompt_timed_out", "timed_out",
                                   "cancelled"])
def test_only_an_approved_request_starts_a_session(client, w, state):
    with_prompt(w)
    if state == "timed_out":
        with_email(w)
    rid = ask(w)
    if state == "denied":
        answer(client, w.device_token, rid, "decline")
    elif state == "prompt_timed_out":  # the end user never answered; nobody else can
        age(rid, 61)
    elif state == "timed_out":
        age(rid, 181)
        decisions.expire_overdue(utcnow())
        db.session.commit()
    elif state == "cancelled":
        decisions.cancel_request(user=w.tech, request_id=rid, actor=CLI, now=utcnow())
        db.session.commit()
    assert_error(start(client, w.device_token, rid), 409)
    assert db.session.scalar(select(func.count(RemoteSession.id))) == 0


def test_another_devices_request_does_not_start_a_session(client, w):
    rid = ask(w)
    assert_error(start(client, w.device_b_token, rid), 404)
    for unknown in (rid + 1000, 2**31, 2**64):
        assert_error(start(client, w.device_token, unknown), 404)
        assert_error(client.post(f"{SESSIONS}/{unknown}/end", headers=bearer(w.device_token)),
                     404)
    assert db.session.scalar(select(func.count(RemoteSession.id))) == 0


@pytest.mark.parametrize("body", [{}, {"request_id": "1"}, {"request_id": None},
                                  {"request_id": True}, {"request_id": 1.5}, [1]])
def test_a_bad_request_id_is_400(client, w, body):
    ask(w)
    response = client.post(SESSIONS, json=body, headers=bearer(w.device_token))
    assert_error(response, 400)


# --- tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["revoked", "user", "none", "garbage"])
def test_agent_endpoints_need_a_live_device_token(client, w, who):
    with_prompt(w)
    rid = ask(w)
    if who == "revoked":
        db.session.execute(update(ApiToken).where(ApiToken.device_id == w.device.id)
                           .values(revoked_at=utcnow()))
        db.session.commit()
    headers = {"revoked": bearer(w.device_token), "user": bearer(w.tech_token), "none": {},
               "garbage": bearer("x" * 43)}[who]
    for response in (
            client.put(STATE, json={"locked": True}, headers=headers),
            client.get(PROMPTS, headers=headers),
            client.post(f"{PROMPTS}/{rid}", json={"decision": "accept"}, headers=headers),
            client.post(SESSIONS, json={"request_id": rid}, headers=headers),
            client.post(f"{SESSIONS}/1/end", headers=headers)):
        assert assert_error(response, 401)["code"] == "unauthorized"
    db.session.expire_all()
    assert db.session.get(SessionRequest, rid).status == "pending"
    assert events("prompt.shown") == 0
