"""Session logs of a department: the Sessions page and the timelines its rows link to.
Read-only (GET only: there is nothing here to POST), never cached, out of htmx's history."""
from __future__ import annotations

from flask import Blueprint, current_app, make_response, render_template, request
from flask_login import current_user, login_required

from portal.domain.log_filters import (
    LogFilter,
    approved_by_label,
    duration_text,
    parse_log_filter,
)
from portal.services import session_logs, timeline as timelines
from portal.web.common import utcnow

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
        client=client, client_before=client_before), 422 if found.errors else 200)


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
