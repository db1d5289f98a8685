"""Shared fixtures. The suite runs on SQLite, and on PostgreSQL when
PORTAL_TEST_DATABASE_URI names a database (its tables are rebuilt through Alembic)."""
from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, text

from portal import create_app
from portal.extensions import db
from portal.services import accounts, departments, devices
from portal.services.actors import CLI

PASSWORD = "correct horse battery"
NOW = datetime(2026, 11, 22, 10, 15, 30, 123000, tzinfo=timezone.utc)

# design.md's settings, copied from the spec (not from the code), so tests check the code
# against what the spec says.
DESIGN_LABELS = {
    "is_confirmation_shown": "Show confirmation at the remote end",
    "confirmation_message": "Confirmation Message",
    "confirmation_timeout_seconds": "Timeout (in seconds)",
    "is_shown_when_locked":
        "Show confirmation in locked and logged off devices (Windows only)",
    "is_email_authorization_required":
        "Require email authorization for incoming connections",
    "email_authorization_timeout_seconds": "Email authorization timeout (in seconds)",
    "email_recipients": "Recipient(s)",
    "is_sign_in_required_to_decide": "Approvers must sign in to decide",
    "is_otp_allowed": "Allow the use of one-time passwords",
    "is_otp_auto_sent_to_directory_users":
        "Automatically send one-time passwords to Active Directory users",
    "is_otp_auto_sent_to_internal_users":
        "Automatically send one-time passwords to internal users",
    "otp_expiration_minutes": "Access Request Expiration Time (minutes)",
    "otp_min_interval_minutes":
        "Minimum interval between new one-time passwords (minutes)",
}

DESIGN_DEFAULTS = {
    "is_confirmation_shown": False,
    "confirmation_timeout_seconds": 60,
    "is_shown_when_locked": False,
    "is_email_authorization_required": False,
    "email_authorization_timeout_seconds": 180,
    "email_recipients": "",
    "is_sign_in_required_to_decide": True,
    "is_otp_allowed": False,
    "is_otp_auto_sent_to_directory_users": False,
    "is_otp_auto_sent_to_internal_users": False,
    "otp_expiration_minutes": 30,
    "otp_min_interval_minutes": 60,
}


TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key",
    "WTF_CSRF_ENABLED": False,
    # Cheap hashes keep the suite fast; the production cost is tested on its own.
    "ARGON2_TIME_COST": 1,
    "ARGON2_MEMORY_COST_KIB": 8,
    "ARGON2_PARALLELISM": 1,
    "BASE_URL": "http://portal.test",
}


def database_uri(tmp_path_factory) -> str:
    uri = os.environ.get("PORTAL_TEST_DATABASE_URI")
    if uri:
        return uri
    return "sqlite:///" + str(tmp_path_factory.mktemp("db") / "portal.sqlite3")


@pytest.fixture(scope="session")
def _database(tmp_path_factory):
    """Build the schema once per run through the migrations themselves."""
    from flask_migrate import upgrade

    uri = database_uri(tmp_path_factory)
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": uri})
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        db.engine.dispose()
    return uri


def _empty_tables() -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for table in tables:
            db.session.execute(text(f"DELETE FROM {table}"))
    db.session.commit()


class RequestPerContextClient(FlaskClient):
    """Each request in its own app context (its own `g` and database session), as in
    production. The `app` fixture keeps a context pushed for the test's own queries; without
    this, every request would share its `g`, and Flask-Login's cached user would leak from
    one request (or client) to the next.

    What the test has pending is committed before the request, so the request sees it;
    afterwards the test's objects are expired, so it reads what the request committed."""

    def open(self, *args, **kwargs):
        db.session.commit()
        with self.application.app_context():
            response = super().open(*args, **kwargs)
        db.session.expire_all()
        return response


@pytest.fixture
def app_config() -> dict:
    """Extra configuration for the `app` fixture; a module overrides this fixture to add
    settings read at start-up (e.g. the mail server)."""
    return {}


@pytest.fixture
def app(_database, app_config):
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": _database, **app_config})
    app.test_client_class = RequestPerContextClient
    with app.app_context():
        _empty_tables()
    ctx = app.app_context()
    ctx.push()
    yield app
    db.session.remove()
    ctx.pop()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def interleave(app):
    """Someone else's change landing between our check and our write, deterministically:
    after interleave("INSERT INTO devices", other), `other()` runs and commits in an app
    context (a session and a connection) of its own just before the next statement that
    starts so — e.g. our INSERT, after our "does it exist?" check found nothing."""
    armed: list = []

    def before(conn, cursor, statement, parameters, context, executemany):
        for item in list(armed):
            if statement.startswith(item[0]):
                armed.remove(item)
                with app.app_context():
                    item[1]()
                    db.session.commit()

    event.listen(db.engine, "before_cursor_execute", before)
    yield lambda prefix, other: armed.append((prefix, other))
    event.remove(db.engine, "before_cursor_execute", before)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Factory:
    """Creates data through the services, as an admin would, and commits."""

    def department(self, name="QA Team"):
        found = departments.find_department(name)
        if found:
            return found
        department = departments.create_department(name=name, actor=CLI, now=NOW)
        db.session.commit()
        return department

    def user(self, email, role="technician", department=None, password=PASSWORD):
        if role != "admin" and department is None:
            department = self.department()
        user = accounts.create_or_update_user(email=email, password=password, role=role,
                                              department=department, actor=CLI, now=NOW)
        db.session.commit()
        return user

    def group(self, department, name="Testers"):
        group = devices.create_group(department=department, name=name, actor=CLI, now=NOW)
        db.session.commit()
        return group

    def device(self, department, name="WIN-0859G9I39J0", group=None, os="Windows 11",
               ip="10.0.0.5"):
        device, _token = devices.create_device(
            department=department, name=name, os=os, ip_address=ip,
            group_id=group.id if group else None, actor=CLI, now=NOW)
        db.session.commit()
        return device


@pytest.fixture
def make(app):
    return Factory()


class AuthActions:
    def __init__(self, client):
        self._client = client

    def login(self, email, password=PASSWORD, next_url=None):
        data = {"email": email, "password": password}
        if next_url is not None:
            data["next"] = next_url
        return self._client.post("/login", data=data)

    def logout(self):
        return self._client.post("/logout")


@pytest.fixture
def auth(client):
    return AuthActions(client)
