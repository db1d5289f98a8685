"""Small helpers shared by the page blueprints."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, g, redirect, render_template, request
from flask_htmx import make_response
from flask_login import current_user

from portal import clock
from portal.extensions import htmx
from portal.services import authz
from portal.services.actors import Actor


utcnow = clock.request_now  # this request's `now`, read once from the app's clock


def client_ip() -> str:
    """A valid IP address or "" (portal.client_address checks it for web and API alike)."""
    return request.remote_addr or ""


def current_actor() -> Actor:
    return Actor.for_user(current_user, client_ip())


def department_or_403(department_id: int, action: str):
    return authz.department_for(current_user, department_id, action)


def is_htmx() -> bool:
    """Whether htmx sent this request (flask-htmx reads its headers). A view that branches
    on it serves a page and a fragment from one URL, so its answer varies on HX-Request."""
    g.varies_on_htmx = True
    return bool(htmx)


def page_after() -> str | None:
    """The `after=` key of a keyset-paged list. Names and emails are printable, so a key
    with control characters (NUL can't even reach PostgreSQL) starts from the top."""
    after = request.args.get("after") or None
    if after is not None and not after.isprintable():
        return None
    return after


MAX_ID = 2**31 - 1  # the id and seq columns are 32-bit


def query_id(name: str) -> int | None:
    """A positive id from the query string, or None: ASCII digits only (int() would take
    " 7", "-5" and "٣"), and within the columns' range (a bigger number overflows SQLite)."""
    raw = request.args.get(name, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


def page_before() -> int | None:
    """The `before=` key of a newest-first list. A key that is no id starts from the top,
    as does one past every id (everything is before it: that is the first page)."""
    return query_id("before")


def safe_next(target: str | None, default: str) -> str:
    """Only local paths: no scheme, no host, no protocol-relative or backslash tricks."""
    if not target:
        return default
    target = target.strip()
    if any(ch in target for ch in ("\\", "\r", "\n", "\t")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def fragment(template: str, status: int = 200, flash_message: str | None = None,
             category: str = "success", **context):
    """An htmx answer: the fragment, plus an out-of-band flash message when given."""
    body = render_template(template, **context)
    if flash_message:
        body += render_template("_macros/_oob_flash.html", message=flash_message,
                                category=category)
    return make_response(body, status)


def done(message: str, url: str, *, category: str = "success"):
    """After a change: flash and go to `url` — a 303 for a plain form (the browser GETs),
    HX-Redirect for htmx (never a 302 to an htmx request)."""
    flash(message, category)
    if is_htmx():
        return make_response("", 204, redirect=url)
    return redirect(url, code=303)


def apply_errors(form, field_errors: dict[str, list[str]]) -> None:
    """Show a service's field messages next to the form's fields."""
    for field, messages in field_errors.items():
        target = getattr(form, field, None)
        if target is not None:
            target.errors = list(target.errors) + messages
