"""Session logs of a department: the Sessions page and the timelines its rows link to
(read-only, never cached, out of htmx's history), and "End session" on a running remote
session: a confirmation page (a GET, which changes nothing) whose CSRF-protected form
POSTs the end request."""
from __future__ import annotations

from flask import Blueprint, current_app, make_response, render_template, request, url_for
from flask_login import current_user, login_required

from portal.domain.log_filters import (
    LogFilter,
    approved_by_label,
    duration_text,
    parse_log_filter,
)
from portal.domain.errors import ConflictError, InvalidInputError
from portal.domain.permissions import Action, may
from portal.services import session_control, session_logs, timeline as timelines
from portal.web.common import current_actor, done, safe_next, utcnow
from portal.web.errors import status_of

bp = Blueprint("sessions", __name__, url_prefix="/departments")


bp.add_app_template_filter(duration_text)
bp.add_app_template_filter(approved_by_label, "approved_by")


def log_filter(*, choices, choice_key: str = "state", choice_label: str = "State"
               ) -> LogFilter:
    """The filter in this request's URL (the audit log's filters read it the same way)."""
    return parse_log_filter(request.args, choices=choices, choice_key=choice_key,
                            choice_label=choice_label)


def _page_key(name: str) -> str | None:
    raw = request.args.get(name) or None
    return raw if raw is None or (raw.isascii() and len(raw) <= 40) else None


def uncached(body, status: int = 200):
    response = make_response(body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/<int:department_id>/sessions")
@login_required
def index(department_id: int):
    department = session_logs.department_for_logs(current_user, department_id)
    roles = session_logs.roles_of(current_user, department.id)
    found = log_filter(choices=session_logs.STATES)
    limit = current_app.config["PAGE_SIZE"]
    remote_before, client_before = _page_key("remote_before"), _page_key("client_before")
    remote = session_logs.list_remote_sessions(
        department_id=department.id, log_filter=found, before=remote_before, limit=limit,
        now=utcnow())
    client = session_logs.list_client_sessions(
        department_id=department.id, log_filter=found, before=client_before, limit=limit)
    return uncached(render_template(
        "sessions/index.html", department=department, log_filter=found,
        filter_args=found.query_args(), states=session_logs.STATES,
        remote=remote, remote_before=remote_before,
        client=client, client_before=client_before,
        can_end=may(roles, Action.END_SESSION)), 422 if found.errors else 200)


def _end_page(department_id: int, session, back_url: str, status: int = 200, **extra):
    return uncached(render_template(
        "sessions/end.html", session=session, req=session.request, device=session.device,
        department_id=department_id, back_url=back_url, now=utcnow(),
        action=url_for("sessions.end_session", department_id=department_id,
                       session_id=session.id), **extra), status)


def _back_url(department_id: int) -> str:
    """Where to go after (or instead of) ending: the page the button was on, if local."""
    return safe_next(request.values.get("next"),
                     url_for("sessions.index", department_id=department_id))


@bp.get("/<int:department_id>/sessions/<int:session_id>/end")
@login_required
def confirm_end(department_id: int, session_id: int):
    """The confirmation step of "End session": shows the session; changes nothing."""
    session = session_control.session_to_end(user=current_user, department_id=department_id,
                                             session_id=session_id)
    return _end_page(department_id, session, _back_url(department_id))


@bp.post("/<int:department_id>/sessions/<int:session_id>/end")
@login_required
def end_session(department_id: int, session_id: int):
    back_url = _back_url(department_id)
    reason = request.form.get("reason")
    try:
        session = session_control.request_end(
            user=current_user, department_id=department_id, session_id=session_id,
            reason=reason, actor=current_actor(), now=utcnow(),
            user_agent=request.headers.get("User-Agent", ""))
    except (ConflictError, InvalidInputError) as exc:
        session = session_control.session_to_end(
            user=current_user, department_id=department_id, session_id=session_id)
        errors = getattr(exc, "field_errors", None) or {}
        return _end_page(department_id, session, back_url, status_of(exc),
                         error=None if errors else exc.message,
                         reason_errors=errors.get("reason", []), reason=reason)
    return done(f"Ending the session on {session.device.name}: its device ends it on its "
                f"next poll.", back_url)


@bp.get("/<int:department_id>/requests/<int:request_id>/timeline")
@login_required
def session_request(department_id: int, request_id: int):
    story = timelines.session_request_timeline(user=current_user, department_id=department_id,
                                               request_id=request_id)
    return _timeline(story, now=utcnow())


@bp.get("/<int:department_id>/otp-requests/<int:request_id>/timeline")
@login_required
def otp_request(department_id: int, request_id: int):
    story = timelines.otp_request_timeline(user=current_user, department_id=department_id,
                                           request_id=request_id)
    return _timeline(story, now=utcnow())


def _timeline(story, now):
    department = story.subject.department
    roles = session_logs.roles_of(current_user, department.id)
    return uncached(render_template(
        "sessions/timeline.html", story=story, department=department, now=now,
        can_read_logs=session_logs.reads_logs(roles)))
