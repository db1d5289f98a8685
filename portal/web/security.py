"""Sign-in loading, security headers and the htmx/CSRF conventions."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, g, jsonify, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_htmx import make_response
from flask_login import current_user

from portal.domain.permissions import ROLE_NAMES, may, role_label
from portal.extensions import htmx, login_manager
from portal.services import accounts, authz
from portal.web.common import utcnow

CSP = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'; img-src 'self' data:"
)


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer built once per set of
    keys rather than on every request (Flask builds it twice a request, opening and
    saving, even for an API call that sends no cookie). A rotated SECRET_KEY or
    SECRET_KEY_FALLBACKS gets a serializer of its own."""

    def __init__(self) -> None:
        self._serializers: dict[tuple, object] = {}

    def get_signing_serializer(self, app: Flask):
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        found = self._serializers.get(keys)
        if found is None:
            found = super().get_signing_serializer(app)
            if len(self._serializers) > 8:  # keys changed at run time, again and again
                self._serializers.clear()
            self._serializers[keys] = found
        return found


def init_security(app: Flask) -> None:
    app.session_interface = CookieSessions()

    @login_manager.user_loader
    def load_user(session_token: str):
        return accounts.load_signed_in_user(session_token, now=utcnow())

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.blueprint == "api" or request.path.startswith("/api/"):
            return jsonify(error={"code": "unauthorized", "message": "Sign in first."}), 401
        return sign_in_redirect()

    app.add_template_filter(role_label, "role_label")

    @app.context_processor
    def inject_navigation():
        return {"nav": _LazyNavigation(), "may": may, "role_label": role_label,
                "role_names": ROLE_NAMES}

    @app.after_request
    def security_headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        if request.is_secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        # Signed-in pages are private to the browser that asked. Only a response that
        # looked at who is signed in can depend on it (every page that shows a user
        # does, and so does login_required): one that never did (an API call, a
        # status poll) does not load the user only to learn it is nobody.
        user = g.get("_login_user")  # Flask-Login's user of this request, once loaded
        if user is not None and user.is_authenticated:
            headers.setdefault("Cache-Control", "no-store")
        # One URL serving a page or a fragment (a view asked web.common.is_htmx), and
        # every answer to htmx: caches must keep the two apart.
        if g.get("varies_on_htmx") or htmx:
            headers.add("Vary", "HX-Request")
        return response


def sign_in_redirect():
    """To the sign-in page and back here afterwards; htmx gets HX-Redirect, never a 302."""
    target = url_for("auth.login", next=_relative_url())
    if htmx:
        return make_response("", 401, redirect=target)
    return redirect(target, code=303 if request.method != "GET" else 302)


def _relative_url() -> str:
    """Where to come back after signing in: the current page for a plain GET; for a form
    POST or an htmx request, the page the user was on (HX-Current-URL, else Referer) when
    it is on this site — a POST-only or fragment URL can't be shown after sign-in."""
    if request.method == "GET" and not htmx:
        return request.full_path.rstrip("?")
    came_from = urlsplit(htmx.current_url or request.referrer or "")
    if came_from.netloc == request.host and came_from.path.startswith("/"):
        return came_from.path + (f"?{came_from.query}" if came_from.query else "")
    return url_for("main.index")


class _LazyNavigation:
    """Queried only when a full page reads it: fragments and polls pay nothing."""

    _entries: dict | None = None

    def __getattr__(self, name: str) -> bool:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._entries is None:
            self._entries = authz.navigation(current_user)
        return bool(self._entries.get(name))
