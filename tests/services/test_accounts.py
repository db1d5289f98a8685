"""Accounts: sign-in (throttled, no account enumeration), sign-in sessions, API tokens,
users and roles, argon2id password hashes."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from argon2 import Type, extract_parameters
from factories import NOW, PASSWORD, TEST_CONFIG
from sqlalchemy import event, func, select

from portal import create_app
from portal.config import DefaultConfig
from portal.extensions import db
from portal.models import AuditEvent, LoginSession, Membership, User
from portal.services import accounts, crypto
from portal.services.actors import CLI
from portal.domain.errors import InvalidInputError, ThrottledError

EMAIL = "tech@example.com"
IP = "192.0.2.7"
LOCK = timedelta(seconds=DefaultConfig.LOGIN_LOCK_SECONDS)


@pytest.fixture
def user(make):
    return make.user(EMAIL, "technician")


def sign_in(email=EMAIL, password=PASSWORD, now=NOW, client_ip=IP):
    result = accounts.sign_in(email=email, password=password, client_ip=client_ip, now=now)
    db.session.commit()
    return result


def fail(email=EMAIL, password="wrong password!", now=NOW, client_ip=IP):
    try:
        accounts.sign_in(email=email, password=password, client_ip=client_ip, now=now)
    except (InvalidInputError, ThrottledError) as exc:
        db.session.commit()  # failures are counted and audited even though sign-in fails
        return exc
    raise AssertionError("sign-in should have failed")


def database_text() -> str:
    """Every row of every table, as text."""
    chunks = []
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(select(table)).all():
            chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


def load(session_token, now=NOW):
    user = accounts.load_signed_in_user(session_token, now=now)
    db.session.commit()  # as a request does: keep the session's end or its last use
    return user


def session_row(session_token) -> LoginSession:
    return db.session.scalar(select(LoginSession).where(
        LoginSession.token_hash == crypto.keyed_hash(session_token)))


def events(action=None):
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(db.session.scalars(query))


# --- sign-in ---------------------------------------------------------------------------


def test_sign_in_creates_a_session_storing_only_the_token_hash(user):
    result = sign_in()
    assert result.user.id == user.id
    assert len(result.session_token) >= 32
    row = db.session.scalar(select(LoginSession).where(LoginSession.user_id == user.id))
    assert row.token_hash == crypto.keyed_hash(result.session_token)
    assert row.token_hash != result.session_token
    assert row.created_at == NOW and row.ended_at is None and row.client_ip == IP
    assert result.session_token not in database_text()
    assert load(result.session_token).id == user.id


def test_every_sign_in_gets_its_own_session(user):
    first, second = sign_in(), sign_in(now=NOW + timedelta(minutes=1))
    assert first.session_token != second.session_token
    assert db.session.scalar(select(func.count()).select_from(LoginSession)) == 2


def test_email_is_matched_case_insensitively(user):
    assert sign_in(email="  Tech@EXAMPLE.com ").user.id == user.id


def test_wrong_password_and_unknown_email_get_the_same_message(user):
    wrong = fail(password="not the password")
    unknown = fail(email="nobody@example.com", password=PASSWORD)
    assert isinstance(wrong, InvalidInputError) and isinstance(unknown, InvalidInputError)
    assert wrong.message == unknown.message == accounts.SIGN_IN_FAILED
    assert wrong.field_errors == unknown.field_errors
    assert db.session.scalar(select(func.count()).select_from(LoginSession)) == 0


def test_disabled_user_cannot_sign_in_and_is_told_nothing_more(user):
    accounts.set_user_enabled(user=user, enabled=False, actor=CLI, now=NOW)
    db.session.commit()
    exc = fail(password=PASSWORD)
    assert isinstance(exc, InvalidInputError) and exc.message == accounts.SIGN_IN_FAILED


def test_five_failures_lock_the_email_even_for_the_right_password(user):
    for i in range(DefaultConfig.LOGIN_MAX_FAILURES_PER_EMAIL):
        assert isinstance(fail(now=NOW + timedelta(seconds=i)), InvalidInputError)
    locked_at = NOW + timedelta(seconds=4)
    exc = fail(password=PASSWORD, now=locked_at + timedelta(seconds=1))
    assert isinstance(exc, ThrottledError)
    assert exc.message == "Too many sign-in attempts. Try again in 15 minute(s)."
    assert exc.retry_after == LOCK.total_seconds() - 1
    # Still locked one second before the lock ends, fine right after it.
    assert isinstance(fail(password=PASSWORD, now=locked_at + LOCK - timedelta(seconds=1)),
                      ThrottledError)
    assert sign_in(now=locked_at + LOCK).user.id == user.id


def test_four_failures_do_not_lock(user):
    for i in range(DefaultConfig.LOGIN_MAX_FAILURES_PER_EMAIL - 1):
        fail(now=NOW + timedelta(seconds=i))
    assert sign_in(now=NOW + timedelta(seconds=10)).user.id == user.id


def test_attempts_during_the_lock_do_not_extend_it(user):
    for i in range(5):
        fail(now=NOW + timedelta(seconds=i))
    for i in range(10):
        assert isinstance(fail(now=NOW + timedelta(minutes=1 + i)), ThrottledError)
    assert sign_in(now=NOW + timedelta(seconds=4) + LOCK).user.id == user.id


def test_an_unknown_email_is_locked_the_same_way(user):
    for i in range(5):
        fail(email="nobody@example.com", now=NOW + timedelta(seconds=i))
    exc = fail(email="nobody@example.com", password=PASSWORD, now=NOW + timedelta(seconds=5))
    assert isinstance(exc, ThrottledError)  # no hint that the account does not exist


def test_the_lock_is_per_email(user, make):
    make.user("other@example.com", "technician")
    for i in range(5):
        fail(now=NOW + timedelta(seconds=i))
    assert sign_in(email="other@example.com", now=NOW + timedelta(seconds=6)).user.email == \
        "other@example.com"


def test_a_success_clears_the_failure_count(user):
    for i in range(4):
        fail(now=NOW + timedelta(seconds=i))
    sign_in(now=NOW + timedelta(seconds=5))
    for i in range(4):
        fail(now=NOW + timedelta(seconds=10 + i))
    # 8 failures inside one window, but never 5 in a row: not locked.
    assert sign_in(now=NOW + timedelta(seconds=20)).user.id == user.id


def test_failures_older_than_the_window_are_forgotten(user):
    window = timedelta(seconds=DefaultConfig.LOGIN_THROTTLE_WINDOW_SECONDS)
    for i in range(4):
        fail(now=NOW + timedelta(seconds=i))
    fail(now=NOW + window + timedelta(seconds=1))
    assert sign_in(now=NOW + window + timedelta(seconds=2)).user.id == user.id


def test_the_address_counts_failures_only(app, user):
    app.config["LOGIN_MAX_FAILURES_PER_IP"] = 3
    for i in range(5):  # successes from the address never add up to a lock
        sign_in(now=NOW + timedelta(seconds=i))
    for i, email in enumerate(["a@example.com", "b@example.com", "c@example.com"]):
        assert isinstance(fail(email=email, now=NOW + timedelta(seconds=10 + i)),
                          InvalidInputError)
    # Three failures for three emails: the address is locked, for every email.
    assert isinstance(fail(password=PASSWORD, now=NOW + timedelta(seconds=20)), ThrottledError)
    assert sign_in(client_ip="198.51.100.9", now=NOW + timedelta(seconds=21)).user.id == user.id


def test_sign_in_is_audited_without_the_password(user):
    wrong = "Wrong-Horse-Battery-42"
    sign_in()
    for i in range(5):
        fail(password=wrong, now=NOW + timedelta(seconds=1 + i))
    fail(password=PASSWORD, now=NOW + timedelta(seconds=10))
    outcomes = [(e.outcome, e.actor, e.client_ip) for e in events("auth.sign_in")]
    assert outcomes == [("success", EMAIL, IP)] + [("failure", EMAIL, IP)] * 5 + [
        ("throttled", EMAIL, IP)]
    for event in events():
        dumped = json.dumps({c.name: getattr(event, c.name)
                             for c in AuditEvent.__table__.columns}, default=str)
        assert PASSWORD not in dumped and wrong not in dumped
    assert PASSWORD not in database_text() and wrong not in database_text()


def test_failed_sign_in_for_unknown_email_is_audited_with_the_typed_email(user):
    fail(email="Nobody@Example.com")
    (event,) = events("auth.sign_in")
    assert (event.outcome, event.target_id, event.actor_user_id) == (
        "failure", "nobody@example.com", None)


# --- sessions and tokens ---------------------------------------------------------------


def test_sign_out_ends_only_that_session(user):
    first, second = sign_in(), sign_in()
    accounts.sign_out(user=user, session_token=first.session_token, client_ip=IP,
                      now=NOW + timedelta(minutes=5))
    db.session.commit()
    assert load(first.session_token) is None
    assert load(second.session_token).id == user.id
    assert [e.action for e in events("auth.sign_out")] == ["auth.sign_out"]


LIFETIME = timedelta(seconds=DefaultConfig.SESSION_ABSOLUTE_LIFETIME_SECONDS)
IDLE = timedelta(seconds=DefaultConfig.SESSION_IDLE_TIMEOUT_SECONDS)


def test_session_lifetimes_default_to_twelve_hours_and_thirty_idle_minutes():
    assert (LIFETIME, IDLE) == (timedelta(hours=12), timedelta(minutes=30))


def test_a_session_in_use_ends_at_its_absolute_lifetime(user):
    token = sign_in().session_token
    used = NOW
    while used + timedelta(minutes=20) < NOW + LIFETIME:
        used += timedelta(minutes=20)
        assert load(token, now=used).id == user.id  # never idle for long
    assert load(token, now=NOW + LIFETIME - timedelta(seconds=1)).id == user.id
    assert load(token, now=NOW + LIFETIME) is None
    assert session_row(token).ended_at == NOW + LIFETIME
    assert load(token, now=NOW + LIFETIME + timedelta(seconds=1)) is None
    assert session_row(token).ended_at == NOW + LIFETIME  # ended once


def test_a_session_ends_after_the_idle_timeout_counted_from_its_last_use(user):
    token = sign_in().session_token
    assert load(token, now=NOW + IDLE - timedelta(seconds=1)).id == user.id
    last_use = NOW + IDLE - timedelta(seconds=1)
    assert load(token, now=last_use + IDLE - timedelta(seconds=1)).id == user.id
    later = last_use + IDLE - timedelta(seconds=1)
    assert load(token, now=later + IDLE) is None
    assert session_row(token).ended_at == later + IDLE
    # Coming back before the lifetime ends does not revive it.
    assert load(token, now=later + IDLE + timedelta(seconds=1)) is None


def test_the_lifetimes_are_configurable(app, user):
    app.config["SESSION_IDLE_TIMEOUT_SECONDS"] = 60
    app.config["SESSION_ABSOLUTE_LIFETIME_SECONDS"] = 120
    idle, aged = sign_in().session_token, sign_in().session_token
    assert load(idle, now=NOW + timedelta(seconds=60)) is None
    assert load(aged, now=NOW + timedelta(seconds=59)).id == user.id
    assert load(aged, now=NOW + timedelta(seconds=118)).id == user.id
    assert load(aged, now=NOW + timedelta(seconds=120)) is None


def test_polling_marks_the_session_used_at_most_once_a_minute(app, user):
    token = sign_in().session_token
    writes = []

    def count_updates(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE LOGIN_SESSIONS"):
            writes.append(statement)

    event.listen(db.engine, "before_cursor_execute", count_updates)
    try:
        for second in range(0, 60, 2):  # a page polling every two seconds
            assert load(token, now=NOW + timedelta(seconds=second)).id == user.id
        assert writes == [] and session_row(token).last_seen_at == NOW
        assert load(token, now=NOW + timedelta(seconds=60)).id == user.id
        assert len(writes) == 1 and session_row(token).last_seen_at == NOW + timedelta(
            seconds=60)
    finally:
        event.remove(db.engine, "before_cursor_execute", count_updates)


def test_signing_in_again_ends_the_browsers_previous_session(user, make):
    other = make.user("other@example.com", "approver")
    first = sign_in()
    again = accounts.sign_in(email="other@example.com", password=PASSWORD, client_ip=IP,
                             now=NOW + timedelta(minutes=1),
                             previous_session_token=first.session_token)
    db.session.commit()
    assert load(first.session_token, now=NOW + timedelta(minutes=2)) is None
    assert session_row(first.session_token).ended_at == NOW + timedelta(minutes=1)
    assert load(again.session_token, now=NOW + timedelta(minutes=2)).id == other.id


def test_a_failed_sign_in_keeps_the_browsers_session(user):
    first = sign_in()
    try:
        accounts.sign_in(email=EMAIL, password="wrong password!", client_ip=IP, now=NOW,
                         previous_session_token=first.session_token)
    except InvalidInputError:
        db.session.commit()
    assert load(first.session_token).id == user.id


def test_unknown_session_token_loads_nobody(user):
    assert load("made-up-token") is None


def test_disabling_a_user_ends_sessions_and_revokes_tokens_for_good(user):
    session_token = sign_in().session_token
    api_token = accounts.create_user_token(user=user, actor=CLI, now=NOW)
    db.session.commit()
    assert accounts.find_token(api_token).user_id == user.id

    accounts.set_user_enabled(user=user, enabled=False, actor=CLI, now=NOW)
    db.session.commit()
    assert load(session_token) is None
    assert accounts.find_token(api_token) is None
    assert [e.action for e in events("user.disabled")] == ["user.disabled"]

    # Enabling again does not bring the old session or token back.
    accounts.set_user_enabled(user=user, enabled=True, actor=CLI, now=NOW)
    db.session.commit()
    assert load(session_token) is None
    assert accounts.find_token(api_token) is None
    assert sign_in().user.id == user.id


def test_user_token_is_stored_hashed_and_found(user):
    token = accounts.create_user_token(user=user, actor=CLI, now=NOW)
    db.session.commit()
    assert token not in database_text()
    assert accounts.find_token(token).user.email == EMAIL
    assert accounts.find_token(token + "x") is None


# --- users and roles -------------------------------------------------------------------


def test_existing_user_gets_the_new_role_and_keeps_the_password(make, user):
    before = user.password_hash
    department = make.department()
    again = accounts.create_or_update_user(email="TECH@example.com",
                                           password="a different password", role="approver",
                                           department=department, actor=CLI, now=NOW)
    db.session.commit()
    assert again.id == user.id
    assert db.session.get(User, user.id).password_hash == before
    roles = set(db.session.scalars(select(Membership.role).where(Membership.user_id == user.id)))
    assert roles == {"technician", "approver"}
    assert sign_in().user.id == user.id
    assert isinstance(fail(password="a different password"), InvalidInputError)


def test_adding_a_role_twice_adds_one_membership(make, user):
    department = make.department()
    for _ in range(2):
        accounts.create_or_update_user(email=EMAIL, password=None, role="technician",
                                       department=department, actor=CLI, now=NOW)
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Membership)) == 1


def test_reject_password_for_existing_raises_and_adds_nothing(make, user):
    with pytest.raises(InvalidInputError) as caught:
        accounts.create_or_update_user(email=EMAIL, password="another password",
                                       role="approver", department=make.department(),
                                       actor=CLI, now=NOW,
                                       reject_password_for_existing=True)
    assert "already has an account" in caught.value.field_errors["password"][0]
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Membership)) == 1


@pytest.mark.parametrize("kwargs, field", [
    ({"role": "superuser"}, "role"),
    ({"department": None}, "department"),
    ({"email": "not an email"}, "email"),
    ({"password": None}, "password"),
    ({"password": "short"}, "password"),
])
def test_create_user_rejects_bad_input(make, kwargs, field):
    args = {"email": "new@example.com", "password": PASSWORD, "role": "technician",
            "department": make.department(), "actor": CLI, "now": NOW, **kwargs}
    with pytest.raises(InvalidInputError) as caught:
        accounts.create_or_update_user(**args)
    assert field in caught.value.field_errors
    db.session.rollback()
    assert accounts.find_user("new@example.com") is None


def test_admin_role_needs_no_department(make):
    admin = make.user("boss@example.com", "admin")
    assert admin.is_admin
    assert db.session.scalar(select(func.count()).select_from(Membership)) == 0


# --- password hashing ------------------------------------------------------------------


def test_production_defaults_hash_with_argon2id_of_at_least_owasp_cost(_database, app):
    config = {k: v for k, v in TEST_CONFIG.items() if not k.startswith("ARGON2_")}
    production = create_app({**config, "SQLALCHEMY_DATABASE_URI": _database})
    assert production.config["ARGON2_MEMORY_COST_KIB"] == DefaultConfig.ARGON2_MEMORY_COST_KIB
    with production.app_context():
        try:
            department = accounts_department()
            accounts.create_or_update_user(email="strong@example.com", password=PASSWORD,
                                           role="technician", department=department,
                                           actor=CLI, now=NOW)
            db.session.commit()
            stored = accounts.find_user("strong@example.com").password_hash
            params = extract_parameters(stored)
            assert params.type is Type.ID
            assert params.memory_cost >= 19456
            assert params.time_cost >= 2
            assert (params.memory_cost, params.time_cost, params.parallelism) == (
                DefaultConfig.ARGON2_MEMORY_COST_KIB, DefaultConfig.ARGON2_TIME_COST,
                DefaultConfig.ARGON2_PARALLELISM)
            assert PASSWORD not in stored
            assert accounts.sign_in(email="strong@example.com", password=PASSWORD,
                                    client_ip="", now=NOW).user.email == "strong@example.com"
            db.session.rollback()
        finally:
            db.session.remove()
            db.engine.dispose()


def accounts_department():
    from portal.services import departments

    return departments.create_department(name="Strong Team", actor=CLI, now=NOW)
