"""One-time passwords through the device API, on a fixed clock, with mail delivered to a
real SMTP server on loopback (design.md "One-time passwords"; security.md §13–20)."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from api_setup import assert_error, bearer
from factories import NOW, PASSWORD
from sqlalchemy import func, select, text

from portal.clock import FixedClock
from portal.extensions import db
from portal.jobs import deliver_outbox
from portal.models import AuditEvent, ClientSession, OneTimePassword, OutboxMessage
from portal.services import departments, devices
from portal.services.actors import CLI

DEVICE = "WIN-0859G9I39J0"
OTHER = "WIN-OTHER"
APPROVER = "approver@example.com"
USER_EMAIL = "j.smith@example.com"
CODE_IN_MAIL = re.compile(r"^\s+(\d{8})\s*$", re.M)
LINK_IN_MAIL = re.compile(r"Check Request: http://portal\.test(/approvals/\S+)")


@pytest.fixture
def app_config(smtp_config):
    return {**smtp_config, "CLOCK": FixedClock(NOW)}


@pytest.fixture
def clock(app):
    return app.extensions["clock"]


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.user(APPROVER, "approver", department)
    make.user("member@example.com", "technician", department, password=PASSWORD)
    make.user("outsider@example.com", "technician", make.department("Elsewhere"))
    tokens = {}
    for name in (DEVICE, OTHER):
        _device, tokens[name] = devices.create_device(department=department, name=name,
                                                      actor=CLI, now=NOW)
    db.session.commit()
    department.tokens = tokens
    return department


def configure(department, **changes):
    values = {**departments.settings_values(department.settings), "is_otp_allowed": True,
              **changes}
    departments.update_settings(department=department, values=values, actor=CLI, now=NOW)
    db.session.commit()


def ask(client, qa, device=DEVICE, **body):
    return client.post("/api/v1/agent/otp/request", json={"username": "jsmith", **body},
                       headers=bearer(qa.tokens[device]))


def verify(client, qa, code, device=DEVICE, username="jsmith", email=USER_EMAIL):
    return client.post("/api/v1/agent/otp/verify",
                       json={"username": username, "email": email, "password": code},
                       headers=bearer(qa.tokens[device]))


def deliver(app, smtp, clock):
    with app.app_context():
        report = deliver_outbox(clock())
        db.session.commit()
        db.session.remove()
    return report


def codes_sent_to(smtp, address):
    return [CODE_IN_MAIL.search(m.get_body(("plain",)).get_content()).group(1)
            for m in smtp.handler.received_by(address)
            if "one-time password for" in m["Subject"]]


def approve_by_link(app, smtp, clock, decision="approve"):
    deliver(app, smtp, clock)
    mail = smtp.handler.received_by(APPROVER)[-1]
    path = LINK_IN_MAIL.search(mail.get_body(("plain",)).get_content()).group(1)
    approver = app.test_client()
    assert approver.post("/login", data={"email": APPROVER, "password": PASSWORD}
                         ).status_code == 303
    page = approver.get(path)
    assert page.status_code == 200 and "One-time password request" in page.get_data(True)
    return approver.post(path, data={"decision": decision, "comment": "ok"})


def count(action):
    return db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == action))


def test_disabled_departments_get_403(client, qa):
    assert assert_error(ask(client, qa, email=USER_EMAIL), 403)["code"] == "otp_disabled"


def test_approval_path_end_to_end(app, client, qa, smtp, clock):
    configure(qa)
    asked = ask(client, qa, email=USER_EMAIL)
    assert asked.status_code == 202
    body = asked.get_json()
    assert set(body) == {"status", "request_id", "expires_at"}
    assert (body["status"], body["expires_at"]) == ("awaiting_approval",
                                                    "2026-11-22T10:45:30.123Z")
    again = ask(client, qa, email=USER_EMAIL.upper()).get_json()
    assert again["request_id"] == body["request_id"]  # the same request, nothing re-sent
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
    status_path = f"/api/v1/agent/otp/requests/{body['request_id']}"
    assert client.get(status_path, headers=bearer(qa.tokens[DEVICE])
                      ).get_json()["status"] == "pending"
    assert client.get(status_path, headers=bearer(qa.tokens[OTHER])).status_code == 404

    clock.advance(60)
    assert approve_by_link(app, smtp, clock).status_code == 200
    outcome = client.get(status_path, headers=bearer(qa.tokens[DEVICE])).get_json()
    assert outcome == {"id": body["request_id"], "status": "approved",
                       "expires_at": "2026-11-22T10:45:30.123Z",
                       "sent_to": "j***@example.com", "comment": "ok"}
    deliver(app, smtp, clock)
    [code] = codes_sent_to(smtp, USER_EMAIL)
    otp = db.session.scalar(select(OneTimePassword))
    assert otp.expires_at == NOW + timedelta(minutes=31)  # 30 min after the approval

    verified = verify(client, qa, code)
    assert verified.status_code == 200
    session_id = verified.get_json()["client_session_id"]
    assert verified.get_json() == {"allowed": True, "client_session_id": session_id}
    session = db.session.get(ClientSession, session_id)
    assert session.user_name == "jsmith (j.smith@example.com)"
    assert verify(client, qa, code).status_code == 403  # single use
    end = f"/api/v1/agent/client-sessions/{session_id}/end"
    assert client.post(end, headers=bearer(qa.tokens[OTHER])).status_code == 404
    assert client.post(end, headers=bearer(qa.tokens[DEVICE])).status_code == 200
    assert assert_error(client.post(end, headers=bearer(qa.tokens[DEVICE])), 409)
    for action in ("otp.requested", "otp.access_requested", "otp.approved", "otp.sent",
                   "otp.verified", "client_session.started", "client_session.ended"):
        assert count(action) >= 1, action


def test_a_second_decision_is_409_and_after_expiry_410(app, client, qa, smtp, clock):
    configure(qa)
    ask(client, qa, email=USER_EMAIL)
    assert approve_by_link(app, smtp, clock, decision="deny").status_code == 200
    assert approve_by_link(app, smtp, clock).status_code == 409
    ask(client, qa, username="other", email="o@example.com")
    clock.advance(minutes=30)
    assert approve_by_link(app, smtp, clock).status_code == 410
    assert db.session.scalar(select(func.count()).select_from(OneTimePassword)) == 0


def test_internal_users_get_their_account_s_address(client, qa, app, smtp, clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True)
    sent = ask(client, qa, login="member@example.com", password=PASSWORD)
    assert sent.status_code == 202
    assert sent.get_json() == {"status": "sent", "sent_to": "m***@example.com",
                               "expires_at": "2026-11-22T10:45:30.123Z"}
    wrong = ask(client, qa, login="member@example.com", password="not the password")
    unknown = ask(client, qa, login="nobody@example.com", password=PASSWORD)
    outsider = ask(client, qa, login="outsider@example.com", password=PASSWORD)
    bodies = {r.get_data() for r in (wrong, unknown, outsider)}
    assert [r.status_code for r in (wrong, unknown, outsider)] == [403, 403, 403]
    assert len(bodies) == 1 and b"invalid_credentials" in bodies.pop()
    # Only internal users on and no login: the approval path, which needs an address.
    assert assert_error(ask(client, qa), 422)["code"] == "invalid"


def test_a_repeat_resends_the_same_code_and_a_new_one_is_too_soon(app, client, qa, smtp,
                                                                  clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True)
    first = ask(client, qa, login="member@example.com", password=PASSWORD).get_json()
    clock.advance(120)
    second = ask(client, qa, login="member@example.com", password=PASSWORD).get_json()
    assert second["expires_at"] == first["expires_at"]
    deliver(app, smtp, clock)
    codes = codes_sent_to(smtp, "member@example.com")
    assert len(codes) == 2 and codes[0] == codes[1]
    # Another user name on the same device: a new code, within the device's interval.
    too_soon = ask(client, qa, username="alice", login="member@example.com",
                   password=PASSWORD)
    error = assert_error(too_soon, 429)
    assert error["code"] == "too_soon"
    assert too_soon.get_json()["retry_after"] == 3480
    assert too_soon.headers["Retry-After"] == "3480"
    assert db.session.scalar(select(func.count()).select_from(OneTimePassword)) == 1
    clock.advance(minutes=58)
    assert ask(client, qa, username="alice", login="member@example.com",
               password=PASSWORD).status_code == 202


def test_five_failures_lock_out_even_the_right_code(app, client, qa, smtp, clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True, otp_expiration_minutes=120)
    ask(client, qa, login="member@example.com", password=PASSWORD)
    deliver(app, smtp, clock)
    [code] = codes_sent_to(smtp, "member@example.com")
    address = "member@example.com"
    wrong = f"{(int(code) + 1) % 10 ** 8:08d}"
    answers = [verify(client, qa, wrong, email=address) for _ in range(5)]
    during = [verify(client, qa, code, email=address) for _ in range(3)]
    assert {r.status_code for r in answers + during} == {403}
    assert {r.get_data() for r in answers + during} == {b'{"allowed":false}\n'}
    assert count("otp.locked") == 1
    # A resend during the lock doesn't lift it.
    ask(client, qa, login="member@example.com", password=PASSWORD)
    assert verify(client, qa, code, email=address).status_code == 403
    clock.advance(minutes=15)
    assert verify(client, qa, code, email=address).status_code == 200


def test_every_refusal_reads_the_same_byte_for_byte(app, client, qa, smtp, clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True)
    ask(client, qa, login="member@example.com", password=PASSWORD)
    deliver(app, smtp, clock)
    [code] = codes_sent_to(smtp, "member@example.com")
    address = "member@example.com"
    refusals = {
        "foreign device": verify(client, qa, code, device=OTHER, email=address),
        "other username": verify(client, qa, code, username="alice", email=address),
        "other email": verify(client, qa, code, email="else@example.com"),
        "wrong": verify(client, qa, "00000000" if code != "00000000" else "11111111",
                        email=address),
        "not digits": verify(client, qa, "x" * 5000, email=address),
    }
    assert verify(client, qa, code, email=address).status_code == 200
    refusals["used"] = verify(client, qa, code, email=address)
    assert {r.status_code for r in refusals.values()} == {403}
    assert {r.get_data() for r in refusals.values()} == {b'{"allowed":false}\n'}


def test_a_code_is_refused_one_second_after_it_expires(app, client, qa, smtp, clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True)
    ask(client, qa, login="member@example.com", password=PASSWORD)
    deliver(app, smtp, clock)
    [code] = codes_sent_to(smtp, "member@example.com")
    clock.advance(minutes=30, seconds=1)
    assert verify(client, qa, code, email="member@example.com").get_data() == \
        b'{"allowed":false}\n'


def test_no_code_is_ever_stored_or_audited_in_plaintext(app, client, qa, smtp, clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True)
    ask(client, qa, login="member@example.com", password=PASSWORD)
    deliver(app, smtp, clock)
    [code] = codes_sent_to(smtp, "member@example.com")
    verify(client, qa, code, email="member@example.com")
    with db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                assert code not in repr(tuple(row)), table.name
        assert conn.execute(text("SELECT count(*) FROM one_time_passwords "
                                 "WHERE code_ciphertext IS NOT NULL")).scalar() == 0


@pytest.mark.parametrize("body", [
    {}, {"username": 7}, {"username": None}, {"username": "jsmith", "emergency": "yes"},
    {"username": "jsmith", "email": 5}, {"username": "x" * 300, "email": USER_EMAIL},
    {"username": "js\x00mith", "email": USER_EMAIL}, {"username": "jsmith", "email": "nope"},
    {"username": "jsmith", "login": 1, "password": PASSWORD},
])
def test_bad_requests_are_4xx_and_write_nothing(client, qa, body):
    configure(qa)
    before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    response = client.post("/api/v1/agent/otp/request", json=body,
                           headers=bearer(qa.tokens[DEVICE]))
    assert response.status_code in (400, 422), response.get_data()
    assert_error(response, response.status_code)
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before


@pytest.mark.parametrize("body", [
    {}, {"username": "jsmith"}, {"username": "jsmith", "email": USER_EMAIL},
    {"username": "jsmith", "email": USER_EMAIL, "password": 12345678},
    {"username": ["x"], "email": USER_EMAIL, "password": "12345678"},
])
def test_verify_with_missing_or_wrong_typed_fields_is_400(client, qa, body):
    configure(qa)
    response = client.post("/api/v1/agent/otp/verify", json=body,
                           headers=bearer(qa.tokens[DEVICE]))
    assert assert_error(response, 400)["code"] == "bad_request"


def test_smtp_down_keeps_the_code_and_delivers_it_once_it_is_back(app, client, qa, smtp,
                                                                  clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True)
    smtp.stop()
    assert ask(client, qa, login="member@example.com", password=PASSWORD).status_code == 202
    report = deliver(app, smtp, clock)
    assert (report.sent, len(report.retried)) == ([], 1)
    assert db.session.scalar(select(func.count()).select_from(OneTimePassword)) == 1
    smtp.start()
    clock.advance(10)  # past the first retry's backoff
    assert len(deliver(app, smtp, clock).sent) == 1
    clock.advance(60)
    assert deliver(app, smtp, clock).sent == []  # once
    [code] = codes_sent_to(smtp, "member@example.com")
    assert verify(client, qa, code, email="member@example.com").status_code == 200


def test_the_outbox_page_never_shows_a_code_once_sent(app, client, qa, smtp, clock, make):
    configure(qa, is_otp_auto_sent_to_internal_users=True)
    ask(client, qa, login="member@example.com", password=PASSWORD)
    make.user("admin@example.com", "admin")
    admin = app.test_client()
    admin.post("/login", data={"email": "admin@example.com", "password": PASSWORD})
    deliver(app, smtp, clock)
    [code] = codes_sent_to(smtp, "member@example.com")
    page = admin.get("/outbox").get_data(as_text=True)
    assert "one-time password for" in page and code not in page and "(not shown)" in page


def test_a_success_resets_the_count_and_a_resend_does_not(app, client, qa, smtp, clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True, otp_expiration_minutes=120)
    address = "member@example.com"
    ask(client, qa, login=address, password=PASSWORD)
    deliver(app, smtp, clock)
    [code] = codes_sent_to(smtp, address)
    wrong = f"{(int(code) + 1) % 10 ** 8:08d}"
    for _ in range(3):
        verify(client, qa, wrong, email=address)
    ask(client, qa, login=address, password=PASSWORD)  # a resend: the count stays at 3
    for _ in range(2):
        verify(client, qa, wrong, email=address)
    assert count("otp.locked") == 1
    clock.advance(minutes=15)
    assert verify(client, qa, code, email=address).status_code == 200  # resets
    clock.advance(minutes=61)
    ask(client, qa, login=address, password=PASSWORD)  # a new code
    deliver(app, smtp, clock)
    new_code = codes_sent_to(smtp, address)[-1]
    for _ in range(4):
        verify(client, qa, f"{(int(new_code) + 1) % 10 ** 8:08d}", email=address)
    assert count("otp.locked") == 1  # 4 since the success: no new lock
    assert verify(client, qa, new_code, email=address).status_code == 200


def test_turning_otp_off_stops_every_code_with_the_same_answer(app, client, qa, smtp, clock):
    configure(qa, is_otp_auto_sent_to_internal_users=True)
    ask(client, qa, login="member@example.com", password=PASSWORD)
    deliver(app, smtp, clock)
    [code] = codes_sent_to(smtp, "member@example.com")
    configure(qa, is_otp_allowed=False)
    refused = verify(client, qa, code, email="member@example.com")
    assert (refused.status_code, refused.get_data()) == (403, b'{"allowed":false}\n')
    configure(qa, is_otp_allowed=True)
    assert verify(client, qa, code, email="member@example.com").status_code == 200
