"""The approval page from the email's "Check Request" link.

GET and HEAD never change anything (mail scanners fetch every link); deciding takes a
human click on a CSRF-protected POST form, and — with "Approvers must sign in to decide"
on — the signed-in recipient.
"""
from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from portal.extensions import db
from portal.services import requests as service
from portal.services.audit import record_event
from portal.services.errors import ForbiddenError, InvalidInputError, NotFoundError
from portal.services.actors import Actor
from portal.web.common import client_ip, current_actor, utcnow

bp = Blueprint("approvals", __name__, url_prefix="/approvals")

def _context(link, now, **extra):
    req = link.request
    signed_in = current_user if current_user.is_authenticated else None
    return {
        "link": link, "req": req, **asdict(service.reading(req, now)),
        "sign_in_required": req.department.settings.is_sign_in_required_to_decide,
        "signed_in": signed_in,
        "is_recipient": bool(signed_in and signed_in.email.lower()
                             == link.recipient_email.lower()),
        **extra,
    }


def _page(template: str, http_status: int = 200, **context):
    response = make_response(render_template(template, **context), http_status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _unknown():
    return _page("approvals/unknown.html", 404)


def _find(token: str):
    try:
        return service.find_link(token)
    except NotFoundError:
        return None


@bp.route("/<token>", methods=["GET"])
def show(token: str):
    link = _find(token)
    if link is None:
        return _unknown()
    now = utcnow()
    if request.method == "GET":  # HEAD records nothing at all
        record_event(actor=Actor(label=current_user.email if current_user.is_authenticated
                                 else "anonymous", client_ip=client_ip()),
                     action="link.opened", target_type="session_request",
                     target_id=link.request_id, department_id=link.request.department_id,
                     now=now, details={"request_id": link.request_id,
                                       "recipient": link.recipient_email,
                                       "user_agent": request.headers.get("User-Agent", "")[:200]})
        db.session.commit()
    return _page("approvals/show.html", **_context(link, now))


@bp.get("/<token>/status")
def status(token: str):
    """Polling fragment: read-only, stops itself once the request is over."""
    link = _find(token)
    if link is None:
        return _unknown()
    return _page("approvals/_status.html", **_context(link, utcnow()))


@bp.post("/<token>")
def decide(token: str):
    link = _find(token)
    if link is None:
        return _unknown()
    now = utcnow()
    signed_in = current_user if current_user.is_authenticated else None
    try:
        service.decide_with_link(link=link, decision=request.form.get("decision", ""),
                                 signed_in=signed_in, comment=request.form.get("comment"),
                                 actor=current_actor() if signed_in else
                                 Actor(label=link.recipient_email, client_ip=client_ip()),
                                 now=now, user_agent=request.headers.get("User-Agent", ""))
    except service.SignInRequiredError:
        db.session.rollback()
        return redirect(url_for("auth.login", next=url_for("approvals.show", token=token)),
                        code=303)
    except ForbiddenError as exc:
        db.session.rollback()
        return _page("approvals/show.html", 403, **_context(link, now, error=exc.message))
    except InvalidInputError as exc:
        db.session.rollback()
        return _page("approvals/show.html", 400, **_context(link, now, error=exc.message))
    except service.DecisionError as exc:
        db.session.commit()  # an overdue request was just marked timed out: keep that
        return _page("approvals/show.html", exc.status,
                     **_context(link, now, error=exc.message))
    db.session.commit()  # `link` reloads what was committed when the page reads it
    return _page("approvals/show.html", 200, **_context(link, now, just_decided=True))
