"""CSRF protection switched on, tokens sent the way the pages and htmx send them."""
from __future__ import annotations

import pytest
from factories import PASSWORD

from portal.extensions import db

from .helpers import (
    HTMX,
    csrf_from_body,
    csrf_from_form,
    location,
    page,
    settings_form,
    snapshot,
)

ADMIN = "qa-admin@example.com"
EXPIRED = "Your form expired or came from another site. Reload the page and try again."


@pytest.fixture
def app_config():
    """This module's app has CSRF protection on."""
    return {"WTF_CSRF_ENABLED": True}


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    make.user(ADMIN, "department_admin", department)
    make.device(department, "WIN-1")
    return department


def sign_in(client, email=ADMIN):
    token = csrf_from_form(page(client.get("/login")))
    response = client.post("/login", data={"email": email, "password": PASSWORD,
                                           "csrf_token": token})
    assert response.status_code == 303
    return response


@pytest.fixture
def admin(client, qa):
    sign_in(client)


def test_sign_in_without_a_token_is_refused(client, qa):
    before = snapshot()
    response = client.post("/login", data={"email": ADMIN, "password": PASSWORD})
    assert response.status_code == 400
    assert EXPIRED in response.get_data(as_text=True)
    assert snapshot() == before  # no sign-in session, no audit event
    assert client.get("/").status_code == 302


def test_sign_in_with_the_token_of_the_page_works(client, qa):
    sign_in(client)
    assert client.get("/").status_code == 200


def test_a_token_from_before_sign_in_is_dead_after_it(client, qa):
    old = csrf_from_form(page(client.get("/login")))
    sign_in(client)
    before = snapshot()
    response = client.post(f"/departments/{qa.id}/settings",
                           data={**settings_form(confirmation_timeout_seconds=99),
                                 "csrf_token": old})
    assert response.status_code == 400
    assert snapshot() == before


POSTS = [
    ("/departments/{id}/settings", settings_form(confirmation_timeout_seconds=99)),
    ("/departments/{id}/exclusions", {"target": "device:{device}"}),
    ("/departments/{id}/devices", {"name": "NEW-PC"}),
    ("/departments/{id}/groups", {"name": "Night shift"}),
    ("/departments/{id}/members", {"email": "new@example.com", "role": "approver",
                                   "password": "long enough pw"}),
    ("/logout", {}),
]


def _fill(qa, path, data):
    device = db.session.query(db.metadata.tables["devices"].c.id).scalar()
    return (path.format(id=qa.id),
            {k: v.format(device=device) for k, v in data.items()})


@pytest.mark.parametrize("path,data", POSTS, ids=[p for p, _ in POSTS])
def test_a_post_without_a_token_is_400_and_changes_nothing(client, admin, qa, path, data):
    path, data = _fill(qa, path, data)
    before = snapshot()
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert EXPIRED in response.get_data(as_text=True)
    assert snapshot() == before
    assert client.get("/").status_code == 200  # still signed in (even for /logout)


@pytest.mark.parametrize("path,data", POSTS, ids=[p for p, _ in POSTS])
def test_a_post_with_another_browsers_token_is_400(client, admin, qa, path, data):
    path, data = _fill(qa, path, data)
    stranger = client.application.test_client()
    foreign = csrf_from_form(page(stranger.get("/login")))
    before = snapshot()
    response = client.post(path, data={**data, "csrf_token": foreign})
    assert response.status_code == 400
    assert snapshot() == before


def test_a_form_post_with_the_token_from_the_page_works(client, admin, qa):
    url = f"/departments/{qa.id}/settings"
    doc = page(client.get(url))
    token = csrf_from_form(doc.one("form", id="settings-form"))
    response = client.post(url, data={**settings_form(confirmation_timeout_seconds=99),
                                      "csrf_token": token})
    assert response.status_code == 303
    db.session.expire_all()
    assert qa.settings.confirmation_timeout_seconds == 99


def test_each_remove_form_carries_a_working_token(client, admin, qa):
    settings = f"/departments/{qa.id}/settings"
    add_form = page(client.get(settings)).one("section", id="exclusions").one("form")
    [device] = [o.get("value") for o in add_form.find_all("option") if o.get("value")]
    response = client.post(add_form.get("action"), data={
        "target": device, "csrf_token": csrf_from_form(add_form)})
    assert response.status_code == 303
    remove = [f for f in page(client.get(settings)).find_all("form")
              if f.get("action", "").endswith("/delete")]
    assert len(remove) == 1
    response = client.post(remove[0].get("action"),
                           data={"csrf_token": csrf_from_form(remove[0])})
    assert response.status_code == 303
    assert "is no longer excluded" in client.get(settings).get_data(as_text=True)


def test_an_htmx_post_sends_the_token_in_the_x_csrftoken_header(client, admin, qa):
    url = f"/departments/{qa.id}/settings"
    token = csrf_from_body(page(client.get(url)))
    response = client.post(url, data=settings_form(otp_expiration_minutes=45),
                           headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 200
    assert page(response).one("form", id="settings-form")
    db.session.expire_all()
    assert qa.settings.otp_expiration_minutes == 45

    device = db.session.query(db.metadata.tables["devices"].c.id).scalar()
    response = client.post(f"/departments/{qa.id}/exclusions",
                           data={"target": f"device:{device}"},
                           headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 200
    assert "WIN-1" in page(response).one("section", id="exclusions").one("tbody").text()


@pytest.mark.parametrize("token", ["", "not-a-token"], ids=["missing", "bad"])
def test_an_htmx_post_with_a_bad_token_refreshes_the_page(client, admin, qa, token):
    url = f"/departments/{qa.id}/settings"
    before = snapshot()
    headers = {**HTMX, **({"X-CSRFToken": token} if token else {})}
    response = client.post(url, data=settings_form(otp_expiration_minutes=45), headers=headers)
    assert response.status_code == 400
    assert response.headers["HX-Refresh"] == "true"
    assert snapshot() == before


def test_sign_out_from_the_header_form(client, admin):
    form = page(client.get("/")).one("form", action="/logout")
    response = client.post("/logout", data={"csrf_token": csrf_from_form(form)})
    assert response.status_code == 303
    assert location(response)[0] == "/login"
    assert client.get("/").status_code == 302


def test_the_api_uses_bearer_tokens_not_csrf(client):
    response = client.post("/api/v1/anything", json={})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_end_session_needs_the_confirmation_forms_token(client, qa, make):
    from portal.models import RemoteSession
    from portal.services import agents, departments, requests
    from portal.services.actors import CLI
    from factories import NOW

    tech = make.user("tech@example.com", "technician", qa)
    device = make.device(qa, "WIN-2")
    departments.add_exclusion(department=qa, target=f"device:{device.id}", actor=CLI,
                              now=NOW)
    req = requests.create_session_request(technician=tech, device_name="WIN-2", actor=CLI,
                                          now=NOW, base_url="http://portal.test")
    session = agents.start_remote_session(device=device, request_id=req.id, actor=CLI,
                                          now=NOW)
    db.session.commit()
    sign_in(client)
    url = f"/departments/{qa.id}/sessions/{session.id}/end"
    before = snapshot()
    refused = client.post(url, data={"reason": "no token"})
    assert refused.status_code == 400 and EXPIRED in refused.get_data(as_text=True)
    assert snapshot() == before
    token = csrf_from_form(page(client.get(url)))
    assert client.post(url, data={"reason": "with token", "csrf_token": token}
                       ).status_code == 303
    db.session.expire_all()
    assert db.session.get(RemoteSession, session.id).end_reason == "with token"
