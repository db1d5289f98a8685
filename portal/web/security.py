"""Sign-in loading, security headers and the htmx/CSRF conventions."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import Flask, jsonify, redirect, request, url_for
from flask_login import current_user

from portal.extensions import login_manager

CSP = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'; img-src 'self' data:"
)


def init_security(app: Flask) -> None:
    @login_manager.user_loader
    def load_user(session_token: str):
        from portal.services.accounts import load_signed_in_user

        return load_signed_in_user(session_token, now=datetime.now(timezone.utc))

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.blueprint == "api" or request.path.startswith("/api/"):
            return jsonify(error={"code": "unauthorized", "message": "Sign in first."}), 401
        target = url_for("auth.login", next=_relative_url())
        if request.headers.get("HX-Request") == "true":
            response = app.response_class(status=401)
            response.headers["HX-Redirect"] = target
            return response
        return redirect(target, code=303 if request.method != "GET" else 302)

    @app.context_processor
    def inject_navigation():
        return {"nav": _LazyNavigation()}

    @app.after_request
    def security_headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        if request.is_secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if current_user and getattr(current_user, "is_authenticated", False):
            # Signed-in pages are private to the browser that asked.
            headers.setdefault("Cache-Control", "no-store")
        if request.headers.get("HX-Request") is not None:
            headers.add("Vary", "HX-Request")
        return response


def _relative_url() -> str:
    """Where to come back after signing in: the current page for a plain GET; for a form
    POST or an htmx request, the page the user was on (HX-Current-URL, else Referer) when
    it is on this site — a POST-only or fragment URL can't be shown after sign-in."""
    if request.method == "GET" and request.headers.get("HX-Request") != "true":
        return request.full_path.rstrip("?")
    came_from = urlsplit(request.headers.get("HX-Current-URL") or request.referrer or "")
    if came_from.netloc == request.host and came_from.path.startswith("/"):
        return came_from.path + (f"?{came_from.query}" if came_from.query else "")
    return url_for("main.index")


def navigation() -> dict:
    """Which main-menu entries the signed-in user's roles open (one query)."""
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Membership

    if not current_user or not getattr(current_user, "is_authenticated", False):
        return {}
    if current_user.is_admin:
        return {"connect": True, "pending": True, "departments": True, "outbox": True}
    roles = set(db.session.scalars(
        select(Membership.role).where(Membership.user_id == current_user.id).distinct()))
    return {
        "connect": "technician" in roles,
        "pending": bool(roles & {"approver", "department_admin"}),
        "departments": bool(roles & {"department_admin", "auditor"}),
        "outbox": False,
    }


class _LazyNavigation:
    """Queried only when a full page reads it: fragments and polls pay nothing."""

    _entries: dict | None = None

    def __getattr__(self, name: str) -> bool:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._entries is None:
            self._entries = navigation()
        return bool(self._entries.get(name))
