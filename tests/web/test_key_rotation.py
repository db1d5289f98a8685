"""Rotating PORTAL_SECRET_KEY (design.md: three keys a deployment sets apart): browsers
sign in again, but API tokens and mailed approval links keep working, because their
hashes are keyed by PORTAL_TOKEN_HASH_KEY."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from factories import PASSWORD, TEST_CONFIG
from sqlalchemy import select

from portal import create_app
from portal.extensions import db
from portal.models import OutboxMessage
from portal.services import accounts, departments, mail
from portal.services import requests as service
from portal.services.actors import CLI

DEVICE = "WIN-0859G9I39J0"
APPROVER = "approver@example.com"


@pytest.fixture
def issued(make):
    """A technician's API token and an approver's mailed link, from the first key."""
    department = make.department("QA Team")
    make.device(department, DEVICE)
    technician = make.user("tech@example.com", "technician", department)
    make.user(APPROVER, "approver", department)
    values = {**departments.settings_values(department.settings),
              "is_email_authorization_required": True, "email_recipients": APPROVER,
              "email_authorization_timeout_seconds": 600}
    departments.update_settings(department=department, values=values, actor=CLI,
                                now=datetime.now(timezone.utc))
    token = accounts.create_user_token(user=technician, actor=CLI,
                                       now=datetime.now(timezone.utc))
    req = service.create_session_request(technician=technician, device_name=DEVICE,
                                         actor=CLI, now=datetime.now(timezone.utc),
                                         base_url="http://portal.test")
    db.session.commit()
    message = db.session.scalar(select(OutboxMessage).where(OutboxMessage.request_id == req.id))
    (link,) = mail.approval_links_in(message)
    return {"request_id": req.id, "api_token": token, "link": link.removeprefix(
        "http://portal.test")}


@pytest.fixture
def rotated(_database, app):
    """The same database and token hash key, served with a new secret key."""
    new = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": _database,
                      "SECRET_KEY": "a new secret key, rotated after a leak"})
    assert new.config["TOKEN_HASH_KEY"] == app.config["TOKEN_HASH_KEY"]
    yield new
    with new.app_context():
        db.session.remove()
        db.engine.dispose()


def test_rotating_the_secret_key_keeps_tokens_and_links(client, auth, issued, rotated):
    auth.login(APPROVER)
    old_cookie = client.get_cookie("session").value
    db.session.commit()

    after = rotated.test_client()
    response = after.get(f"/api/v1/session-requests/{issued['request_id']}",
                         headers={"Authorization": f"Bearer {issued['api_token']}"})
    assert response.status_code == 200 and response.json["status"] == "pending"
    page = after.get(issued["link"])
    assert page.status_code == 200 and "Allow Session" in page.get_data(as_text=True)
    # The browser's cookie was signed with the old secret: it must sign in again.
    after.set_cookie("session", old_cookie)
    assert after.get("/").status_code == 302
    assert after.post("/login", data={"email": APPROVER, "password": PASSWORD}
                      ).status_code == 303
    # Then the mailed link decides.
    assert after.post(issued["link"], data={"decision": "allow"}).status_code == 200
    response = after.get(f"/api/v1/session-requests/{issued['request_id']}",
                         headers={"Authorization": f"Bearer {issued['api_token']}"})
    assert response.json["status"] == "approved"


def test_a_secret_key_changed_while_running_signs_anew_and_its_fallback_still_reads(
        app, client, auth, issued):
    """Sessions are signed by a serializer kept per set of keys: changing SECRET_KEY
    (or SECRET_KEY_FALLBACKS) in a running app takes effect on the next request."""
    auth.login(APPROVER)
    assert client.get("/").status_code == 200
    old = app.config["SECRET_KEY"]
    app.config["SECRET_KEY"] = "another secret key, set while running"
    assert client.get("/").status_code == 302  # the cookie's signature is the old key's
    app.config["SECRET_KEY_FALLBACKS"] = [old]
    assert client.get("/").status_code == 200
