"""Shared fixtures. The suite runs on SQLite, and on PostgreSQL when
PORTAL_TEST_DATABASE_URI names a database (its tables are rebuilt through Alembic).
Constants and data builders the tests import live in factories.py."""
from __future__ import annotations

import os

import directory_server
import pytest
from smtp_server import SmtpServer
from factories import TEST_CONFIG, AuthActions, Factory
from flask.testing import FlaskClient
from sqlalchemy import event, text

from portal import create_app
from portal.extensions import db


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
    """Every table empty and every id counting from 1 again. DELETE, children first, not
    TRUNCATE: on PostgreSQL a TRUNCATE of every table costs ~100 ms a test, DELETE of
    the few rows a test leaves ~5 ms; one statement then restarts every sequence.
    (SQLite's ids, without AUTOINCREMENT, start again from 1 by themselves.)"""
    for table in reversed(db.metadata.sorted_tables):
        db.session.execute(table.delete())
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(
            "SELECT setval(c.oid, 1, false) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'S' AND n.nspname = current_schema()"))
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


_APPS: dict[tuple, tuple] = {}  # config → (app, its config, extensions, rules, hooks)
KEPT_APPS = 4


def _hooks(app) -> tuple:
    return tuple(len(v) for d in (app.before_request_funcs, app.after_request_funcs,
                                  app.teardown_request_funcs) for v in d.values())


def _app_for(config: dict):
    """An app for `config`, built once per run when the config is plain values: building
    one compiles every URL rule (~70 ms), which every test paid. A test gets it as new:
    its config and extensions as built, no request seen yet; a test that added a route or
    a hook makes the next one build its own."""
    try:
        key = tuple(sorted((k, v) for k, v in config.items()))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _APPS:
        app, settings, extensions, rules, hooks = _APPS[key] = _APPS.pop(key)  # newest
        if len(app.url_map._rules) == rules and _hooks(app) == hooks:
            app.config.clear()
            app.config.update(settings)
            app.extensions.clear()
            app.extensions.update(extensions)
            app._got_first_request = False
            return app
    app = create_app(config)
    if key is not None:
        _APPS.pop(key, None)
        while len(_APPS) >= KEPT_APPS:  # one-off configs (a test's SMTP port) don't pile up
            _APPS.pop(next(iter(_APPS)))
        _APPS[key] = (app, dict(app.config), dict(app.extensions), len(app.url_map._rules),
                      _hooks(app))
    return app


@pytest.fixture
def app(_database, app_config):
    app = _app_for({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": _database, **app_config})
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
def start_scheduler(app):
    """Starts build_scheduler(app) in the background; always shut down afterwards."""
    from portal.jobs import build_scheduler

    running = []

    def start():
        scheduler = build_scheduler(app)
        scheduler.start()
        running.append(scheduler)
        return scheduler

    yield start
    for scheduler in running:
        if scheduler.running:
            scheduler.shutdown(wait=True)


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) on loopback, for the test's mail to arrive at."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_config(smtp) -> dict:
    """The settings that send the app's mail to `smtp` (Flask-Mail suppresses sending
    under TESTING unless told otherwise); a module's `app_config` adds its own."""
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": smtp.port, "MAIL_SUPPRESS_SEND": False,
            "MAIL_DEFAULT_SENDER": "Session Gate <gate@portal.test>"}


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make(app):
    return Factory()


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture(scope="session")
def _slapd(tmp_path_factory):
    if not directory_server.is_installed():
        pytest.skip("OpenLDAP's slapd is not installed (/usr/sbin/slapd, /usr/sbin/slapadd): "
                    "apt-get install slapd ldap-utils")
    server = directory_server.Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def directory(_slapd):
    """A real OpenLDAP slapd, running and answering whatever the test before did to it;
    its `.config` holds the PORTAL_LDAP_* settings (tests/directory_server.py)."""
    _slapd.start()
    return _slapd
