"""The application factory and its register_* helpers."""
from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from portal import pg_transactions  # noqa: F401  (its listeners: BEGIN when needed)
from portal.client_address import ValidRemoteAddr
from portal.clock import init_clock
from portal.config import DefaultConfig
from portal.connection_checks import init_connection_checks
from portal.extensions import csrf, db, htmx, login_manager, mail, migrate
from portal.json_input import JSONProvider
from portal.notifier import init_notifier
from portal.sqlite_writes import QueuedWriterConnection, is_write
from portal.unit_of_work import init_unit_of_work

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigurationError(RuntimeError):
    pass


class IdConverter(IntegerConverter):
    """`<int:…>` in every route: ids fit the database's 32-bit keys, so a huge number in
    a URL is a plain 404 instead of an overflow in the database driver."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, *args, **kwargs)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    config = dict(config or {})
    app = Flask(
        "portal",
        template_folder="../templates",
        static_folder="../static",
        instance_relative_config=True,
        # Where the SQLite file and the demo's secret key live; <project>/instance by default.
        instance_path=config.get("INSTANCE_PATH") or os.environ.get("PORTAL_INSTANCE_PATH"),
    )
    app.json = JSONProvider(app)
    app.config.from_object(DefaultConfig)
    app.config.from_prefixed_env("PORTAL")
    if config:
        app.config.update(config)
    app.url_map.converters["int"] = IdConverter
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    _configure_keys(app)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = (
            "sqlite:///" + os.path.join(app.instance_path, "portal.sqlite3")
        )
    _queue_sqlite_writers(app)
    app.wsgi_app = ValidRemoteAddr(app.wsgi_app)  # type: ignore[method-assign]
    if app.config.get("PROXY_FIX_X_FOR"):  # outside it: ProxyFix sets what it checks
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=int(app.config["PROXY_FIX_X_FOR"]),
                                x_proto=1)  # type: ignore[method-assign]

    register_extensions(app)
    register_blueprints(app)
    register_errors(app)
    register_commands(app)
    register_template_filters(app)
    return app


# The keys a deployment sets apart (design.md, "Configuration and commands"), each with
# the file the demo keeps it in: rotating the secret key (sessions, CSRF) leaves the
# token hashes, and so every API token and approval link, valid.
KEYS = (("SECRET_KEY", "secret_key"), ("TOKEN_HASH_KEY", "token_hash_key"),
        ("AUDIT_KEY", "audit_key"))
MIN_KEY_BYTES = 32
KEY_RECIPE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


def _configure_keys(app: Flask) -> None:
    """PORTAL_SECRET_KEY, PORTAL_TOKEN_HASH_KEY and PORTAL_AUDIT_KEY, at least 32 bytes
    each, in production. Tests pass them in; the demo keeps them in the instance folder
    (instance/secret_key, instance/token_hash_key, instance/audit_key), which later
    commands reuse; tests and debug runs without
    them get random ones."""
    production = not (app.testing or app.debug or app.config.get("DEMO"))
    for name, file_name in KEYS:
        _configure_key(app, name, Path(app.instance_path) / file_name)
        key = app.config[name]
        size = len(key if isinstance(key, bytes) else str(key).encode())
        if production and size < MIN_KEY_BYTES:
            raise ConfigurationError(
                f"PORTAL_{name} is too short ({size} bytes): use at least {MIN_KEY_BYTES} "
                f"random bytes ({KEY_RECIPE}).")


def _configure_key(app: Flask, name: str, key_file: Path) -> None:
    if app.config.get(name):
        return
    if app.config.get("DEMO") and not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    if key_file.exists():
        app.config[name] = key_file.read_text().strip()
        return
    if app.testing or app.debug:
        app.config[name] = secrets.token_urlsafe(48)
        return
    raise ConfigurationError(
        f"PORTAL_{name} is not set. Set it to a long random value ({KEY_RECIPE}) "
        "before starting Session Gate in production."
    )


def _queue_sqlite_writers(app: Flask) -> None:
    """A SQLite database's writers wait their turn in a queue (portal.sqlite_writes)."""
    if str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite"):
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options["connect_args"] = {"factory": QueuedWriterConnection,
                                   **options.get("connect_args", {})}
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


@event.listens_for(Engine, "before_cursor_execute")
def _sqlite_write_turn(conn, cursor, statement, parameters, context, executemany) -> None:
    driver = cursor.connection
    if isinstance(driver, QueuedWriterConnection) and is_write(statement):
        driver.take_turn()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    if isinstance(dbapi_connection, QueuedWriterConnection):
        dbapi_connection.join_queue()
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        # Write-ahead logging: readers never wait for the writer, and a commit is one
        # append (synchronous=NORMAL is durable across application crashes in WAL mode;
        # a power cut may lose the last commits, never the database).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


@event.listens_for(Engine, "savepoint")
def _sqlite_savepoint_inside_a_transaction(conn, name) -> None:
    """Python's sqlite3 issues no BEGIN before a SAVEPOINT, so a savepoint that opened the
    transaction became it: releasing it committed, and a later rollback kept its rows.
    Begin the transaction first, as the driver would for an INSERT."""
    driver = conn.connection.driver_connection
    if isinstance(driver, sqlite3.Connection) and not driver.in_transaction:
        if isinstance(driver, QueuedWriterConnection):
            driver.take_turn()
        driver.execute("BEGIN")


def register_extensions(app: Flask) -> None:
    from portal import models  # noqa: F401  (tables known to Alembic)

    init_clock(app)
    db.init_app(app)
    init_connection_checks(app)
    # First registered, so it runs after every other after_request hook: the commit (or
    # rollback) closes the request's unit of work once everything else has written.
    init_unit_of_work(app)
    init_notifier(app)  # commits that change a request or queue mail wake their waiters
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"),
                     render_as_batch=True, compare_type=True)
    mail.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = None  # the sign-in session row is the protection

    from portal.web.security import init_security

    init_security(app)


def register_blueprints(app: Flask) -> None:
    from portal.api import bp as api_bp
    from portal.web.approvals.views import bp as approvals_bp
    from portal.web.audit.views import bp as audit_bp
    from portal.web.auth.views import bp as auth_bp
    from portal.web.departments.views import bp as departments_bp
    from portal.web.devices.views import bp as devices_bp
    from portal.web.main.views import bp as main_bp
    from portal.web.members.views import bp as members_bp
    from portal.web.outbox.views import bp as outbox_bp
    from portal.web.requests.views import bp as requests_bp
    from portal.web.sessions.views import bp as sessions_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(main_bp)
    app.register_blueprint(departments_bp)
    app.register_blueprint(devices_bp)
    app.register_blueprint(members_bp)
    app.register_blueprint(requests_bp)
    app.register_blueprint(approvals_bp)
    app.register_blueprint(outbox_bp)
    app.register_blueprint(sessions_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(api_bp)
    csrf.exempt(api_bp)  # bearer tokens, no cookies


def register_errors(app: Flask) -> None:
    from portal.web.errors import init_errors

    init_errors(app)


def register_template_filters(app: Flask) -> None:
    """One label per state on every page: `{{ status | status_label }}`,
    `{{ end_user | check_label('end_user') }}`."""
    from portal.domain.requests import check_label, status_label

    app.add_template_filter(status_label)
    app.add_template_filter(check_label)


def register_commands(app: Flask) -> None:
    from portal.cli import init_commands

    init_commands(app)
