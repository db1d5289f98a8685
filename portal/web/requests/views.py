"""Technicians: connect, wait, see the outcome. Approvers: the live pending list."""
from __future__ import annotations

from flask import (Blueprint, current_app, flash, make_response, render_template, request,
                   url_for)
from flask_login import current_user, login_required
from wtforms.fields.choices import SelectChoice

from portal.domain.errors import (
    AlreadyDecidedError,
    ExpiredError,
    InvalidInputError,
    NotFoundError,
    ReportedError,
)
from portal.domain.permissions import Action, may
from portal.domain import otp as otp_rules
from portal.domain import preapproval as preapproval_rules
from portal.services import (approvals, authz, decisions, otp_requests, preapprovals,
                             requests as service)
from portal.services import timeline as timelines
from portal.web.common import apply_errors, current_actor, done, fragment, is_htmx, utcnow
from portal.web.errors import status_of
from portal.web.requests.forms import ConnectForm

bp = Blueprint("requests", __name__)


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every page here needs a signed-in user."""


def _connect_form(formdata=None) -> ConnectForm:
    form = ConnectForm(formdata=formdata) if formdata is not None else ConnectForm()
    devices = service.requestable_devices(current_user)
    form.device.choices = [SelectChoice("", "Choose a device…")] + [
        SelectChoice(d.name, f"{d.name}" + (f" — {d.os}" if d.os else ""),
                     optgroup=d.department.name) for d in devices]
    form.has_devices = bool(devices)
    return form


def _recent():
    now = utcnow()
    return [(req, service.reading(req, now).status)
            for req in service.recent_requests(current_user)]


@bp.route("/connect", methods=["GET", "POST"])
def connect():
    if request.method == "GET":
        form = _connect_form(formdata=None)
        form.device.data = request.args.get("device", "")
        return render_template("requests/connect.html", form=form, recent=_recent())
    form = _connect_form(formdata=request.form)
    if form.validate_on_submit():
        try:
            req = service.create_session_request(
                technician=current_user, device_name=form.device.data,
                run_as=form.run_as.data, reason=form.reason.data, actor=current_actor(),
                now=utcnow(), base_url=current_app.config["BASE_URL"],
                user_agent=request.headers.get("User-Agent", ""))
        except ReportedError as exc:  # a cool-down after a report: 429, said on the form
            apply_errors(form, {"device": [exc.message]})
            response = make_response(render_template("requests/connect.html", form=form,
                                                     recent=_recent()), 429)
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        except (InvalidInputError, NotFoundError) as exc:
            apply_errors(form, getattr(exc, "field_errors", None) or {"device": [exc.message]})
        else:
            return done("Request sent.", url_for("requests.show", request_id=req.id),
                        category="info")
    return render_template("requests/connect.html", form=form, recent=_recent()), 422


def _status_context(req, now):
    """`timeline_url`: once the request is over, its timeline, for a viewer who may read
    it (not worked out on every poll while it is pending)."""
    reading = service.reading(req, now).as_context()
    timeline_url = None
    if reading["status"] != "pending" and timelines.may_read_request_timeline(current_user,
                                                                             req):
        timeline_url = url_for("sessions.session_request", department_id=req.department_id,
                               request_id=req.id)
    return {"req": req, "timeline_url": timeline_url, **reading}


@bp.get("/requests/<int:request_id>")
def show(request_id: int):
    req = service.get_own_request(current_user, request_id)
    return render_template("requests/show.html", **_status_context(req, utcnow()))


@bp.get("/requests/<int:request_id>/status")
def status(request_id: int):
    """The polling fragment: read-only; stops polling itself once the request is over."""
    req = service.get_own_request(current_user, request_id)
    response = make_response(render_template("requests/_status.html",
                                             **_status_context(req, utcnow())))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/requests/<int:request_id>/cancel")
def cancel(request_id: int):
    now = utcnow()
    http_status = 200
    try:
        req = decisions.cancel_request(user=current_user, request_id=request_id,
                                       actor=current_actor(), now=now)
    except (AlreadyDecidedError, ExpiredError) as exc:
        req = service.get_own_request(current_user, request_id)
        message, category, http_status = exc.message, "error", status_of(exc)
    else:
        message, category = "Request cancelled.", "info"
    if is_htmx():
        # Rendered here, not through fragment(): the template's `status` (the request's
        # state) would land in fragment()'s HTTP status argument.
        body = render_template("requests/_status.html", **_status_context(req, now))
        body += render_template("_macros/_oob_flash.html", message=message,
                                category=category)
        return make_response(body, http_status)
    return done(message, url_for("requests.show", request_id=request_id), category=category)


# --- approvers -----------------------------------------------------------------------


def _may_see_pending() -> None:
    authz.require(current_user, Action.DECIDE,
                  message="Only approvers and department admins decide requests.")


def _pending_context(now, *, polled=False):
    """`polled`: the fragment only ever reaches htmx, whose requests carry the CSRF token
    in a header, so its forms can leave out a per-form token (a lighter poll)."""
    rows, total = service.pending_for(current_user, now)
    otp_rows = otp_requests.pending_for(current_user, now)
    return {"rows": [(req, {**_status_context(req, now),
                            "is_own": decisions.is_own_request(req, current_user),
                            "has_counted": approvals.has_counted(req, current_user.email),
                            "preapproval_hours": preapprovals.offered_for(req)})
                     for req in rows], "total": total,
            "otp_rows": [(ask, {"seconds_left": otp_rules.seconds_until(ask.expires_at, now),
                                "is_own": otp_requests.is_own(ask, current_user)})
                         for ask in otp_rows],
            "polled": polled}


@bp.get("/requests/pending")
def pending():
    _may_see_pending()
    return render_template("requests/pending.html", **_pending_context(utcnow()),
                           session_departments=_session_departments())


def _session_departments():
    """Where the user may end running sessions: the pending page links their Sessions
    pages (approvers have no other way there)."""
    return [department for department, roles in authz.departments_of(current_user)
            if may(roles, Action.END_SESSION)]


@bp.get("/requests/pending/rows")
def pending_rows():
    _may_see_pending()
    response = make_response(render_template("requests/_pending_rows.html",
                                             **_pending_context(utcnow(), polled=True)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/requests/<int:request_id>/decide")
def decide(request_id: int):
    _may_see_pending()
    decision = request.form.get("decision", "")
    now = utcnow()
    status = 200
    try:
        req = decisions.decide_in_portal(user=current_user, request_id=request_id,
                                         decision=decision, actor=current_actor(), now=now,
                                         comment=request.form.get("comment"),
                                         number=request.form.get("number"),
                                         preapproval_hours=request.form.get(
                                             "preapproval_hours"),
                                         user_agent=request.headers.get("User-Agent", ""))
    except (AlreadyDecidedError, ExpiredError, InvalidInputError) as exc:
        message, category, status = exc.message, "error", status_of(exc)
    else:
        message, category = _decided_message(req, decision), "success"
        hours = request.form.get("preapproval_hours")
        if decision == "allow" and req.status == "approved" and hours:
            message += (f" {req.technician.email} is pre-approved on {req.device.name} for "
                        f"{preapproval_rules.hours_label(int(hours))}.")
    if is_htmx():
        return fragment("requests/_pending_rows.html", status=status, flash_message=message,
                        category=category, **_pending_context(now, polled=True))
    if status == 422:  # bad input (a number, a comment): the list again, saying why
        flash(message, "error")
        return render_template("requests/pending.html", **_pending_context(now)), 422
    return done(message, url_for("requests.pending"), category=category)


def _decided_message(req, decision: str) -> str:
    if req.status == "pending":
        return (f"Your Allow for {req.device.name} counted: {req.approvals_received} of "
                f"{req.approvals_required} approvals.")
    if decision == "report":
        return f"Request for {req.device.name} reported as unexpected and denied."
    if decision == "allow" and req.status == "denied":
        return f"Request for {req.device.name} denied: the number did not match."
    verb = "allowed" if req.status == "approved" else "denied"
    return f"Request for {req.device.name} {verb}."


@bp.get("/requests/<int:request_id>/report")
def report(request_id: int):
    """"I didn't expect this" from the pending list: the confirmation step (a GET never
    decides; its form POSTs the report)."""
    _may_see_pending()
    req = service.get_request(request_id)
    authz.require(current_user, Action.DECIDE, req.department_id,
                  "You can't decide requests of this department.")
    return render_template("approvals/report.html", **_status_context(req, utcnow()),
                           action=url_for("requests.decide", request_id=req.id),
                           back_url=url_for("requests.pending"))


@bp.post("/otp-requests/<int:request_id>/decide")
def decide_otp(request_id: int):
    """Approve / Deny an OTP access request from the pending list."""
    _may_see_pending()
    now = utcnow()
    status = 200
    try:
        ask = otp_requests.decide_in_portal(
            user=current_user, request_id=request_id,
            decision=request.form.get("decision", ""), comment=request.form.get("comment"),
            actor=current_actor(), now=now, user_agent=request.headers.get("User-Agent", ""))
    except (AlreadyDecidedError, ExpiredError) as exc:
        message, category, status = exc.message, "error", status_of(exc)
    else:
        verb = "approved" if ask.status == "approved" else "denied"
        message = f"One-time password for {ask.username} on {ask.device.name} {verb}."
        category = "success"
    if is_htmx():
        return fragment("requests/_pending_rows.html", status=status, flash_message=message,
                        category=category, **_pending_context(now, polled=True))
    return done(message, url_for("requests.pending"), category=category)
