"""The approval page from the email's "Check Request" link.

GET and HEAD never decide (mail scanners fetch every link); the first GET of a link is
recorded once. Deciding takes a human click on a CSRF-protected POST form, and — under the
stricter of the link's own rule and today's setting — the signed-in recipient.
"""
from __future__ import annotations

from flask import Blueprint, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from portal.domain.errors import (
    AlreadyDecidedError,
    ExpiredError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    SignInRequiredError,
)
from portal.domain import otp as otp_rules
from portal.services import (approvals, decisions, otp, otp_requests, preapprovals,
                             requests as service)
from portal.services.actors import Actor
from portal.web.common import client_ip, current_actor, utcnow
from portal.web.errors import status_of

bp = Blueprint("approvals", __name__, url_prefix="/approvals")


def _signed_in():
    return current_user if current_user.is_authenticated else None


def _context(link, now, **extra):
    """What the page shows: the request (a session request or an OTP access request) as
    it reads now, and what this link may still do for whoever holds it."""
    signed_in = _signed_in()
    if link.otp_request_id is not None:
        ask = link.otp_request
        status = otp.access_status(ask, now)
        shown = {"ask": ask, "status": status.value,
                 "seconds_left": otp_rules.seconds_until(ask.expires_at, now)
                 if status is otp_rules.AccessStatus.PENDING else 0,
                 "is_link_current": otp_requests.is_link_current(link),
                 "is_own_request": otp_requests.is_own(ask, signed_in, link.recipient_email)}
    else:
        req = link.request
        shown = {"req": req, **service.reading(req, now).as_context(),
                 "has_counted": approvals.has_counted(req, link.recipient_email),
                 "preapproval_hours": preapprovals.offered_for(req),
                 "is_link_current": decisions.is_link_current(link),
                 "is_own_request": decisions.is_own_request(req, signed_in,
                                                            link.recipient_email)}
    return {
        "link": link, **shown,
        "sign_in_required": decisions.is_sign_in_required(link),
        "signed_in": signed_in,
        "is_recipient": bool(signed_in and signed_in.email.lower()
                             == link.recipient_email.lower()),
        **extra,
    }


def _templates(link) -> tuple[str, str]:
    """(page, status fragment) for the link's kind of request."""
    if link.otp_request_id is not None:
        return "approvals/otp_show.html", "approvals/_otp_status.html"
    return "approvals/show.html", "approvals/_status.html"


def _page(template: str, http_status: int = 200, **context):
    response = make_response(render_template(template, **context), http_status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _find(token: str, find=decisions.find_link):
    """The link, or None for an unknown token: for deciding, find_link's entities (the
    decision changes them); for showing only, `find=decisions.read_link`'s read-only
    snapshots."""
    try:
        return find(token)
    except NotFoundError:
        return None


def _unknown():
    return _page("approvals/unknown.html", 404)


@bp.route("/<token>", methods=["GET"])
def show(token: str):
    link = _find(token, decisions.read_link)
    if link is None:
        return _unknown()
    now = utcnow()
    if request.method == "GET":  # HEAD records nothing at all
        signed_in = _signed_in()
        decisions.record_link_opened(
            link=link, now=now, user_agent=request.headers.get("User-Agent", ""),
            actor=Actor(label=signed_in.email if signed_in else "anonymous",
                        user_id=signed_in.id if signed_in else None, client_ip=client_ip()))
    return _page(_templates(link)[0], **_context(link, now))


@bp.get("/<token>/status")
def status(token: str):
    """Polling fragment: read-only, stops itself once the request is over."""
    link = _find(token, decisions.read_link)
    if link is None:
        return _unknown()
    return _page(_templates(link)[1], **_context(link, utcnow()))


def _number(link) -> dict:
    """The picked number and pre-approval window, for a session request's decision (OTP
    requests have neither)."""
    return {} if link.otp_request_id is not None else {
        "number": request.form.get("number"),
        "preapproval_hours": request.form.get("preapproval_hours")}


@bp.get("/<token>/report")
def report(token: str):
    """"I didn't expect this": the confirmation step. A GET, so it never decides; its
    form POSTs the report to the link like any decision."""
    link = _find(token, decisions.read_link)
    if link is None or link.otp_request_id is not None:
        return _unknown()
    context = _context(link, utcnow())
    return _page("approvals/report.html", **context,
                 action=url_for("approvals.decide", token=token),
                 back_url=url_for("approvals.show", token=token))


@bp.post("/<token>")
def decide(token: str):
    link = _find(token)
    if link is None:
        return _unknown()
    now = utcnow()
    signed_in = _signed_in()
    decide_with_link = (otp_requests.decide_with_link if link.otp_request_id is not None
                        else decisions.decide_with_link)
    page = _templates(link)[0]
    try:
        decide_with_link(
            link=link, decision=request.form.get("decision", ""), signed_in=signed_in,
            comment=request.form.get("comment"), **_number(link),
            actor=current_actor() if signed_in else
            Actor(label=link.recipient_email, client_ip=client_ip()),
            now=now, user_agent=request.headers.get("User-Agent", ""))
    except SignInRequiredError:
        return redirect(url_for("auth.login", next=url_for("approvals.show", token=token)),
                        code=303)
    except (ForbiddenError, InvalidInputError, AlreadyDecidedError, ExpiredError) as exc:
        # The page itself, saying why; the unit of work keeps only what must stay (a
        # late decision's "timed out").
        return _page(page, status_of(exc), **_context(link, now, error=exc.message))
    hours = request.form.get("preapproval_hours") if link.otp_request_id is None else None
    return _page(page, 200, **_context(link, now, just_decided=True,
                                       preapproved_hours=hours or None))
