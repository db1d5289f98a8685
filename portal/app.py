"""The application factory and its register_* helpers."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from portal.config import DefaultConfig
from portal.extensions import csrf, db, htmx, login_manager, mail, migrate

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
    app.config.from_object(DefaultConfig)
    app.config.from_prefixed_env("PORTAL")
    if config:
        app.config.update(config)
    app.url_map.converters["int"] = IdConverter
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    _configure_secret_key(app)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = (
            "sqlite:///" + os.path.join(app.instance_path, "portal.sqlite3")
        )
    if app.config.get("PROXY_FIX_X_FOR"):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=int(app.config["PROXY_FIX_X_FOR"]),
                                x_proto=1)  # type: ignore[method-assign]

    register_extensions(app)
    register_blueprints(app)
    register_errors(app)
    register_commands(app)
    register_template_filters(app)
    return app


def _configure_secret_key(app: Flask) -> None:
    """PORTAL_SECRET_KEY in production. Tests pass one in; the demo keeps one in the
    instance folder (instance/secret_key), which later commands reuse."""
    if app.config.get("SECRET_KEY"):
        return
    key_file = Path(app.instance_path) / "secret_key"
    if app.config.get("DEMO") and not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    if key_file.exists():
        app.config["SECRET_KEY"] = key_file.read_text().strip()
        return
    if app.testing or app.debug:
        app.config["SECRET_KEY"] = secrets.token_urlsafe(48)
        return
    raise ConfigurationError(
        "PORTAL_SECRET_KEY is not set. Set it to a long random value "
        "(python -c 'import secrets; print(secrets.token_urlsafe(48))') before starting "
        "Session Gate in production."
    )


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    module = type(dbapi_connection).__module__
    if module.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()


def register_extensions(app: Flask) -> None:
    from portal import models  # noqa: F401  (tables known to Alembic)

    db.init_app(app)
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
    from portal.web.auth.views import bp as auth_bp
    from portal.web.departments.views import bp as departments_bp
    from portal.web.devices.views import bp as devices_bp
    from portal.web.main.views import bp as main_bp
    from portal.web.members.views import bp as members_bp
    from portal.web.outbox.views import bp as outbox_bp
    from portal.web.requests.views import bp as requests_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(main_bp)
    app.register_blueprint(departments_bp)
    app.register_blueprint(devices_bp)
    app.register_blueprint(members_bp)
    app.register_blueprint(requests_bp)
    app.register_blueprint(approvals_bp)
    app.register_blueprint(outbox_bp)
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
