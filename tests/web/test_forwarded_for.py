"""Behind a proxy (PROXY_FIX_X_FOR=1) the client address comes from X-Forwarded-For, which
anyone can write. The address the app records (sign-in sessions, throttling, the audit
trail) is a valid IP address or nothing — never a 500 (client_ip columns hold 45
characters) and never a forged string in the audit log."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEvent, LoginSession
from portal.services import accounts
from portal.services.actors import CLI

from .helpers import settings_form

ROOT = "root@example.com"
TECH = "tech@example.com"
# X-Forwarded-For as sent -> the address recorded (with one trusted proxy, its last hop)
FORWARDED = [
    ("203.0.113.7", "203.0.113.7"),
    ("10.0.0.1, 203.0.113.7", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::1"),
    ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("fe80::1%" + "x" * 5000, "fe80::1"),
    ("[2001:db8::2]", "2001:db8::2"),
    ("[2001:db8::2]:443", "2001:db8::2"),
    ("203.0.113.8:51234", "203.0.113.8"),
    ("1" * 5000, ""),
    ("a" * 5000, ""),
    ("not-an-ip", ""),
    ("1.2.3.4, <script>alert(1)</script>", ""),
    ("999.1.1.1", ""),
    ("01.2.3.4", ""),
    ("1.2.3.4\x00", ""),
    (" ", "127.0.0.1"),  # no address given: the proxy's own (ProxyFix's rule)
]
IDS = [f"{sent[:20]!r}" for sent, _ in FORWARDED]


@pytest.fixture
def app_config():
    return {"PROXY_FIX_X_FOR": 1}


@pytest.fixture
def qa(make):
    qa = make.department("QA Team")
    make.user(ROOT, "admin")
    make.user(TECH, "technician", qa)
    make.device(qa, "PC-1")
    return qa


def via(sent: str) -> dict:
    return {"X-Forwarded-For": sent}


def last_event(action: str) -> AuditEvent:
    db.session.expire_all()
    return db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                              .order_by(AuditEvent.seq.desc())).first()


@pytest.mark.parametrize("sent,recorded", FORWARDED, ids=IDS)
def test_sign_in_records_a_valid_address_or_none(client, qa, sent, recorded):
    response = client.post("/login", data={"email": ROOT, "password": "correct horse battery"},
                           headers={**via(sent), "X-Forwarded-Proto": "<b>" + "x" * 3000})
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    db.session.expire_all()
    [login] = db.session.scalars(select(LoginSession)).all()
    assert (login.client_ip or "") == recorded
    assert last_event("auth.sign_in").client_ip == recorded


@pytest.mark.parametrize("sent,recorded", FORWARDED, ids=IDS)
def test_a_failed_sign_in_is_counted_without_a_500(client, qa, sent, recorded):
    response = client.post("/login", data={"email": ROOT, "password": "wrong password"},
                           headers=via(sent))
    assert response.status_code == 422
    event = last_event("auth.sign_in")
    assert (event.outcome, event.client_ip) == ("failure", recorded)


@pytest.mark.parametrize("sent,recorded", FORWARDED, ids=IDS)
def test_a_settings_save_records_a_valid_address_or_none(client, auth, qa, sent, recorded):
    auth.login(ROOT)
    response = client.post(f"/departments/{qa.id}/settings",
                           data=settings_form(confirmation_timeout_seconds="90"),
                           headers=via(sent))
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    assert last_event("settings.changed").client_ip == recorded


@pytest.mark.parametrize("sent,recorded", FORWARDED, ids=IDS)
def test_an_api_request_records_a_valid_address_or_none(client, qa, sent, recorded):
    token = accounts.create_user_token(user=accounts.find_user(TECH), actor=CLI,
                                       now=qa.created_at)
    response = client.post("/api/v1/session-requests", json={"device": "PC-1"},
                           headers={"Authorization": f"Bearer {token}", **via(sent)})
    assert response.status_code == 201, response.get_data(as_text=True)[:300]
    assert last_event("request.created").client_ip == recorded


def test_without_proxy_fix_the_header_is_ignored(app, client, qa):
    app.wsgi_app = app.wsgi_app.app  # take ProxyFix off again: the socket address counts
    client.post("/login", data={"email": ROOT, "password": "correct horse battery"},
                headers={"X-Forwarded-For": "203.0.113.7"})
    assert last_event("auth.sign_in").client_ip == "127.0.0.1"
