"""Sign-in throttle under concurrency, on PostgreSQL with real threads (security.md 32):
every parallel wrong password counts, and two first attempts at once are no 500. Each
thread has its own test client, so each request its own app context and connection; all
post together behind a barrier."""
from __future__ import annotations

import os
import threading

import pytest
from factories import PASSWORD
from flask.testing import FlaskClient
from sqlalchemy import select

from portal.extensions import db
from portal.models import LoginThrottle

from .helpers import audit_events

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
        reason="races need PostgreSQL (set PORTAL_TEST_DATABASE_URI)"),
]

EMAIL = "tech@example.com"


def post_together(app, forms: list[dict], client_ip: str = "192.0.2.1") -> list:
    """POST each form to /login from its own thread at once; the statuses, in order."""
    barrier = threading.Barrier(len(forms))
    results: list = [None] * len(forms)

    def worker(index, form):
        client = FlaskClient(app, app.response_class)  # a context per request, per thread
        try:
            barrier.wait(timeout=10)
            results[index] = client.post("/login", data=form,
                                         environ_base={"REMOTE_ADDR": client_ip}).status_code
        except Exception as exc:  # noqa: BLE001 - reported by the assertions
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i, form)) for i, form in enumerate(forms)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a sign-in hung"
    return results


def throttle_row(key: str) -> LoginThrottle | None:
    return db.session.scalar(select(LoginThrottle).where(LoginThrottle.key == key)
                             .execution_options(populate_existing=True))


def test_twenty_parallel_wrong_passwords_all_count_and_lock_the_email(app, client, make):
    make.user(EMAIL)
    app.config["LOGIN_MAX_FAILURES_PER_EMAIL"] = 21
    wrong = {"email": EMAIL, "password": "wrong password!"}
    assert client.post("/login", data=wrong).status_code == 422  # the row exists now
    assert post_together(app, [wrong] * 20) == [422] * 20
    db.session.expire_all()
    assert [e["outcome"] for e in audit_events("auth.sign_in")] == ["failure"] * 21
    row = throttle_row(f"email:{EMAIL}")
    assert row.failures == 21 and row.locked_until is not None
    # Twenty-one attempts were the limit: now even the right password is refused.
    response = client.post("/login", data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 429


def test_two_first_attempts_at_once_are_both_answered(app, make):
    make.user(EMAIL)
    for round_ in range(5):  # each round a fresh email and address: no rows yet
        email = f"nobody-{round_}@example.com"
        forms = [{"email": email, "password": "wrong password!"}] * 2
        assert post_together(app, forms, client_ip=f"192.0.2.{10 + round_}") == [422, 422]
        db.session.expire_all()
        assert throttle_row(f"email:{email}").failures == 2
