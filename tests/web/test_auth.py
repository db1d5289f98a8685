"""Signing in and out (security.md 30–33): next=, session rotation, replay, throttling."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from factories import NOW, PASSWORD
from sqlalchemy import update

from portal.extensions import db
from portal.models import LoginSession
from portal.services import accounts
from portal.services.actors import CLI

from .helpers import audit_events, control, field_error, location, page, snapshot

EMAIL = "ada@example.com"


@pytest.fixture
def user(make):
    return make.user(EMAIL, "department_admin", make.department("QA Team"))


def signed_in(client) -> bool:
    response = client.get("/")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def test_sign_in_page_has_email_password_and_sign_in_button(client):
    response = client.get("/login")
    assert response.status_code == 200
    doc = page(response)
    form = doc.one("form", method="post")
    labels = {label.text(): label.get("for") for label in form.find_all("label")}
    assert control(form, "email").get("id") == labels["Email"]
    assert control(form, "password").get("id") == labels["Password"]
    assert control(form, "password").get("type") == "password"
    assert [b.text() for b in form.find_all("button")] == ["Sign in"]


def test_sign_in_with_right_password_goes_home(client, auth, user):
    assert not signed_in(client)
    response = auth.login(EMAIL)
    assert response.status_code == 303
    assert location(response) == ("/", {})
    assert signed_in(client)
    assert EMAIL in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("target", ["/departments", "/departments/1/settings?tab=x#exclusions"])
def test_sign_in_goes_to_a_safe_next(client, auth, user, target):
    response = auth.login(EMAIL, next_url=target)
    assert response.status_code == 303
    assert response.headers["Location"] == target


def test_next_from_the_address_bar_is_carried_through_the_form(client, user):
    doc = page(client.get("/login?next=/departments"))
    assert doc.one("input", name="next").get("value") == "/departments"
    response = client.post("/login", data={"email": EMAIL, "password": PASSWORD,
                                           "next": "/departments"})
    assert response.headers["Location"] == "/departments"


UNSAFE = [
    "https://evil.example",
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "http:/evil",
    "https:evil.example",
    " //evil.example",
    "/\r\nLocation: https://evil.example",
    "/ok\nSet-Cookie: x=1",
    "/\tevil",
    "evil.example/path",
]


@pytest.mark.parametrize("target", UNSAFE)
def test_unsafe_next_lands_on_home(client, auth, user, target):
    response = auth.login(EMAIL, next_url=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert "evil" not in "".join(f"{k}{v}" for k, v in response.headers.items())


@pytest.mark.parametrize("target", UNSAFE)
def test_unsafe_next_when_already_signed_in_lands_on_home(client, auth, user, target):
    auth.login(EMAIL)
    response = client.get("/login", query_string={"next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_sign_in_rotates_the_session_and_drops_what_was_in_it(client, auth, user):
    with client.session_transaction() as session:
        session["planted"] = "by someone before sign-in"
    before = client.get_cookie("session").value
    response = auth.login(EMAIL)
    assert response.status_code == 303
    set_cookie = [v for v in response.headers.getlist("Set-Cookie") if v.startswith("session=")]
    assert set_cookie, "sign-in must set a new session cookie"
    after = client.get_cookie("session").value
    assert after != before
    with client.session_transaction() as session:
        assert "planted" not in session
    # The cookie from before sign-in never becomes a signed-in session.
    fixated = client.application.test_client()
    fixated.set_cookie("session", before)
    assert not signed_in(fixated)
    assert signed_in(client)


def test_sign_out_is_a_post(client, auth, user):
    auth.login(EMAIL)
    assert client.get("/logout").status_code == 405
    assert signed_in(client)
    response = auth.logout()
    assert response.status_code == 303
    assert location(response)[0] == "/login"
    assert not signed_in(client)
    assert [e["outcome"] for e in audit_events("auth.sign_out")] == ["success"]


def test_replaying_the_cookie_after_sign_out_does_not_sign_in(client, auth, user):
    auth.login(EMAIL)
    stolen = client.get_cookie("session").value
    copy = client.application.test_client()
    copy.set_cookie("session", stolen)
    assert signed_in(copy), "the copied cookie works while the session lasts"

    auth.logout()
    replay = client.application.test_client()
    replay.set_cookie("session", stolen)
    response = replay.get("/departments")
    assert response.status_code == 302
    assert location(response) == ("/login", {"next": ["/departments"]})
    assert not signed_in(copy)


def test_wrong_password_and_unknown_email_answer_alike(client, auth, user):
    wrong = auth.login(EMAIL, password="not the password")
    unknown = auth.login("nobody@example.com", password="not the password")
    assert wrong.status_code == unknown.status_code == 422
    for response in (wrong, unknown):
        doc = page(response)
        assert field_error(doc, "email") == "Invalid email or password."
        assert field_error(doc, "password") == ""
    assert not signed_in(client)
    assert [e["outcome"] for e in audit_events("auth.sign_in")] == ["failure", "failure"]


def test_disabled_user_cannot_sign_in_and_is_told_the_same(client, auth, user):
    accounts.set_user_enabled(user=user, enabled=False, actor=CLI, now=NOW)
    db.session.commit()
    response = auth.login(EMAIL)
    assert response.status_code == 422
    assert field_error(page(response), "email") == "Invalid email or password."
    assert not signed_in(client)


def test_empty_form_asks_for_both_fields(client):
    response = client.post("/login", data={})
    assert response.status_code == 422
    doc = page(response)
    assert field_error(doc, "email") == "Enter your email."
    assert field_error(doc, "password") == "Enter your password."


def test_sixth_attempt_after_five_failures_is_throttled_even_with_right_password(
        client, auth, user):
    for _ in range(5):
        assert auth.login(EMAIL, password="wrong password!").status_code == 422
    response = auth.login(EMAIL)
    assert response.status_code == 429
    text = field_error(page(response), "email")
    assert text.startswith("Too many sign-in attempts")
    assert not signed_in(client)
    outcomes = [e["outcome"] for e in audit_events("auth.sign_in")]
    assert outcomes == ["failure"] * 5 + ["throttled"]
    # Another browser trying the same account is throttled too.
    other = client.application.test_client()
    again = other.post("/login", data={"email": EMAIL.upper(), "password": PASSWORD})
    assert again.status_code == 429


def test_throttling_one_email_leaves_others_alone(client, auth, user, make):
    make.user("bob@example.com", "auditor", make.department("QA Team"))
    for _ in range(5):
        auth.login(EMAIL, password="wrong password!")
    assert auth.login("bob@example.com").status_code == 303


def test_a_success_resets_the_failure_count(client, auth, user):
    for _ in range(4):
        auth.login(EMAIL, password="wrong password!")
    assert auth.login(EMAIL).status_code == 303
    auth.logout()
    for _ in range(4):
        assert auth.login(EMAIL, password="wrong password!").status_code == 422
    assert auth.login(EMAIL).status_code == 303


def test_disabling_the_user_ends_their_browser_session(client, auth, user):
    auth.login(EMAIL)
    assert signed_in(client)
    accounts.set_user_enabled(user=db.session.merge(user), enabled=False, actor=CLI, now=NOW)
    db.session.commit()
    response = client.get("/departments")
    assert response.status_code == 302
    assert location(response)[0] == "/login"
    # Enabling them again does not revive the old session.
    accounts.set_user_enabled(user=accounts.find_user(EMAIL), enabled=True, actor=CLI, now=NOW)
    db.session.commit()
    assert not signed_in(client)


def test_failed_sign_in_never_stores_the_password(client, auth, user):
    auth.login(EMAIL, password="my-secret-typo-123")
    assert "my-secret-typo-123" not in repr(snapshot())


def backdate_sessions(**ago) -> None:
    """Move every sign-in session's times into the past, as if that much time had gone."""
    now = datetime.now(timezone.utc)
    db.session.execute(update(LoginSession).values(
        **{column: now - delta for column, delta in ago.items()}))
    db.session.commit()


def test_a_session_idle_too_long_is_sent_to_sign_in(client, auth, user):
    auth.login(EMAIL)
    backdate_sessions(created_at=timedelta(minutes=40), last_seen_at=timedelta(minutes=29))
    assert signed_in(client)  # used 29 minutes ago: still alive
    backdate_sessions(created_at=timedelta(minutes=40), last_seen_at=timedelta(minutes=31))
    response = client.get("/departments")
    assert response.status_code == 302
    assert location(response) == ("/login", {"next": ["/departments"]})


def test_a_session_past_its_lifetime_is_sent_to_sign_in_even_in_use(client, auth, user):
    auth.login(EMAIL)
    backdate_sessions(created_at=timedelta(hours=12, seconds=1), last_seen_at=timedelta(0))
    response = client.get("/departments")
    assert response.status_code == 302
    assert location(response)[0] == "/login"
    # Signing in again gives a fresh session.
    assert auth.login(EMAIL).status_code == 303
    assert signed_in(client)


def test_signing_in_again_ends_the_previous_session_of_the_browser(client, auth, user, make):
    make.user("bob@example.com", "auditor", make.department("QA Team"))
    auth.login(EMAIL)
    old_cookie = client.get_cookie("session").value
    assert auth.login("bob@example.com").status_code == 303  # the same browser, as Bob
    assert "bob@example.com" in client.get("/").get_data(as_text=True)
    replay = client.application.test_client()
    replay.set_cookie("session", old_cookie)
    assert not signed_in(replay)
