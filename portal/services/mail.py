"""The outbox: emails are written in the transaction that causes them (here) and delivered
by a job over SMTP (portal.services.delivery), retried with backoff on temporary
failures, marked failed on permanent ones, never sent once their request is over."""
from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from flask import current_app
from sqlalchemy import insert, select

from portal.domain import otp as otp_rules
from portal.domain import requests as rules
from portal.extensions import db
from portal.models import OneTimePassword, OutboxMessage, SessionRequest
from portal.services import crypto
from portal.services.pages import Page, fetch_page


def approval_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/approvals/{token}"


def _valid_for(seconds: int) -> str:
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} seconds"


def one_line(text: str | None) -> str:
    """Someone's text quoted on one line of an email: line breaks, control and format
    characters (bidi overrides too) become spaces, and runs of spaces one space, so the
    text can't start a line that reads like ours ("Check Request: …")."""
    if not text:
        return ""
    spaced = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
                     for ch in text)
    return " ".join(spaced.split())


def render_email(template: str, context: dict) -> str:
    """An email's template rendered with its own context alone. Not Flask's
    render_template: an email shows nothing of the page's request (who is signed in, the
    navigation), so the app's context processors and the template signals are skipped
    (a fifth of rendering an approval email's pair, 0.02 ms a create). The app's Jinja
    environment all the same: its autoescaping of .html, its filters."""
    return current_app.jinja_env.get_template(f"emails/{template}").render(context)


def queue_message(*, recipient: str, subject: str, template: str, context: dict,
                  department_id: int, now: datetime, **about) -> OutboxMessage:
    """Write an email to the outbox (delivered by the job). `template` names the pair
    emails/<template>.txt and .html; `about` links it to what it is about (request_id,
    otp_request_id, otp_id)."""
    message = OutboxMessage(
        department_id=department_id, recipient=recipient, subject=subject,
        body_text=render_email(f"{template}.txt", context),
        body_html=render_email(f"{template}.html", context),
        status="pending", attempts=0, next_attempt_at=now, created_at=now, **about)
    db.session.add(message)
    db.session.flush()
    return message


def link_context(*, token: str, base_url: str, expires_at: datetime, now: datetime) -> dict:
    """What an approval email says about its link."""
    return {"url": approval_url(base_url, token),
            "valid_for": _valid_for(rules.seconds_left(expires_at, now)),
            "valid_until": expires_at.strftime("%H:%M:%S UTC")}


# Core, not the ORM's bulk INSERT: no objects are involved, and its set-up cost more
# than the statement. (The notifier still sees it: it wakes the delivery job.)
_INSERT_MESSAGES = insert(OutboxMessage.__table__)


def approval_emails(*, req: SessionRequest, links: list[tuple[str, str]], base_url: str,
                    now: datetime, is_escalation: bool = False) -> list[dict]:
    """The outbox rows (but for their request's id, which `req` may not have yet) of one
    approval email per (recipient, token) of the request's new links. No database work:
    a create renders them before its first write.

    The emails say the same to every recipient but for the link, so the pair of templates
    is rendered once, with an unguessable stand-in for the token (no text of the
    technician's can hold it), and each copy gets its own token put in."""
    if not links:
        return []
    stand_in = crypto.new_token()
    context = {"req": req, "reason": one_line(req.reason), "is_escalation": is_escalation,
               **link_context(token=stand_in, base_url=base_url, expires_at=req.expires_at,
                              now=now)}
    body_text = render_email("approval_request.txt", context)
    body_html = render_email("approval_request.html", context)
    subject = (f"Escalated: remote session request for {req.device.name}" if is_escalation
               else f"Remote session request for {req.device.name}")
    return [{
        "department_id": req.department_id, "recipient": recipient, "subject": subject,
        "body_text": body_text.replace(stand_in, token),
        "body_html": body_html.replace(stand_in, token), "status": "pending",
        "attempts": 0, "next_attempt_at": now, "created_at": now,
    } for recipient, token in links]


def queue_emails(rows: list[dict], request_id: int) -> None:
    """Write approval_emails' rows to the outbox for the request: one INSERT."""
    if rows:
        db.session.execute(_INSERT_MESSAGES, [{**row, "request_id": request_id}
                                              for row in rows])


# An email carrying a one-time password is stored with this in place of the code; the
# delivery job puts the code in (from its sealed copy) only in what it hands to SMTP.
CODE_PLACEHOLDER = "[[one-time password]]"


_LINK_TOKEN = re.compile(r"(/approvals/)[A-Za-z0-9_\-]+")


def redacted(body: str) -> str:
    """A body without the approval link's secret (kept once the message is out of the
    queue)."""
    return _LINK_TOKEN.sub(r"\1(redacted)", body)


def redact(message: OutboxMessage) -> None:
    """Once a message is out of the queue, its copy of the approval link's secret goes."""
    message.body_text = redacted(message.body_text)
    message.body_html = redacted(message.body_html)


CHECK_REQUEST = "Check Request: "


def approval_links_in(message: OutboxMessage, base_url: str | None = None) -> list[str]:
    """The working "Check Request" links a queued message carries (none once redacted):
    the URL of each line of ours that starts with "Check Request: ", when it is an
    approval link under PORTAL_BASE_URL. Never a link out of someone's text."""
    prefix = approval_url(base_url or current_app.config["BASE_URL"], "")
    link = re.compile(re.escape(prefix) + r"[A-Za-z0-9_\-]{20,}")
    candidates = (line.removeprefix(CHECK_REQUEST).strip()
                  for line in message.body_text.splitlines() if line.startswith(CHECK_REQUEST))
    return [url for url in candidates if link.fullmatch(url)]


def cancel_for_request(request_id: int) -> None:
    cancel_for_requests([request_id])


def cancel_for_otp_requests(otp_request_ids: list[int]) -> None:
    """The OTP access requests are over: their approval emails go, links redacted."""
    _cancel_where(OutboxMessage.otp_request_id.in_(otp_request_ids))


def cancel_for_requests(request_ids: list[int]) -> None:
    """The requests are over: undelivered mail about them is not sent any more, and its
    copy of the links' secrets is redacted (rows locked in id order)."""
    _cancel_where(OutboxMessage.request_id.in_(request_ids))


def _cancel_where(condition) -> None:
    """Only mail still in the queue holds a secret: a message is redacted as it leaves
    it (sent, failed or cancelled), so the rest need not be read at all."""
    for message in db.session.scalars(
            select(OutboxMessage)
            .where(condition, OutboxMessage.status.in_(("pending", "sending")))
            .order_by(OutboxMessage.id)):
        message.status = "cancelled"
        redact(message)
    db.session.flush()


def is_configured() -> bool:
    return bool(current_app.config.get("MAIL_SERVER"))


def code_of(message, now: datetime) -> str | None:
    """The one-time password a queued message is to carry, while it still works (its
    sealed copy is dropped once the code is used or expires)."""
    otp = db.session.get(OneTimePassword, message.otp_id)
    if otp is None or otp.used_at is not None or now >= otp.expires_at:
        return None
    return crypto.open_code(otp_rules.binding(otp.device_id, otp.username, otp.email),
                            otp.code_ciphertext)


def outbox_bodies(messages: list[OutboxMessage], now: datetime) -> dict[int, str]:
    """Each message's text as the Outbox page shows it. With no mail server configured
    (the demo), a waiting email's one-time password is shown while the code still works
    — it would have been mailed; once sent, used or expired, never."""
    bodies = {}
    for message in messages:
        body = message.body_text
        if message.otp_id and message.status == "pending" and not is_configured():
            code = code_of(message, now)
            body = body.replace(CODE_PLACEHOLDER, code or "(no longer valid)")
        elif message.otp_id:
            body = body.replace(CODE_PLACEHOLDER, "(not shown)")
        bodies[message.id] = body
    return bodies


def list_outbox(*, before: int | None, limit: int) -> Page:
    """Newest first; the page's next_after is the id to continue before."""
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc())
    if before:
        query = query.where(OutboxMessage.id < before)
    return fetch_page(query, limit, key=lambda message: message.id)
