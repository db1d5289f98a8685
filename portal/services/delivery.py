"""Outbox delivery: claim what is due, send it over one SMTP connection per batch, record
each outcome. Retries back off on temporary failures (RFC 5321 §4.5.4.1), permanent ones
fail at once, and mail whose request is over is cancelled, never sent. The job in
portal.jobs is the boundary: it commits the claim, then the outcomes (see Outcomes).

Per batch: a SELECT and an UPDATE … RETURNING claim it, one query loads the messages with
the state of what they are about; per message: the MIME bytes (mime_bytes) and one SMTP
transaction. Outcomes are kept in an Outcomes buffer and written together — in id order,
one executemany UPDATE per run of one kind, and one audit INSERT, Core statements built
once — after the first message sent OUTCOME_SECONDS after the last write, and at the end:
a batch takes a writer's turn a few times rather than once per message (on SQLite every
commit waits for the one write lock)."""
from __future__ import annotations

import base64
import secrets
import smtplib
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from datetime import datetime, timedelta
from email.header import Header
from email.utils import format_datetime, make_msgid, parseaddr

from flask import current_app
from flask_mail import sanitize_address
from sqlalchemy import bindparam, select, update

from portal.domain import otp as otp_rules
from portal.domain import requests as rules
from portal.extensions import db, mail
from portal.models import OtpAccessRequest, OutboxMessage, SessionRequest
from portal.services.actors import SYSTEM
from portal.services.audit import record_events
from portal.services.mail import CODE_PLACEHOLDER, code_of, is_configured, one_line, redacted

MAX_ATTEMPTS = 12
CLAIM_SECONDS = 120  # a claimed message whose sender died is retried after this
CLAIMABLE = ("pending", "sending")
CRLF = "\r\n"
MAX_LINE = 998
# Outcomes are written after the first message sent this long after the last write: a
# crash between sending and writing re-sends (when the claim lapses, or another scheduler
# takes over) about what was sent in the last OUTCOME_SECONDS. SMTP cannot promise
# better: a reply lost on the wire has the same effect.
OUTCOME_SECONDS = 0.1


def backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s … capped at 10 minutes."""
    return timedelta(seconds=min(5 * 2 ** max(attempts - 1, 0), 600))


@dataclass
class DeliveryReport:
    sent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return len(self.sent) + len(self.retried) + len(self.failed) + len(self.cancelled)

    def add(self, other: DeliveryReport) -> None:
        for name in ("sent", "retried", "failed", "cancelled"):
            getattr(self, name).extend(getattr(other, name))


def _permanent(exc: Exception) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    code = getattr(exc, "smtp_code", None)
    return isinstance(code, int) and code >= 500


def claim_due(now: datetime, limit: int = 50) -> list[int]:
    """Claim what is due for sending: one SELECT of up to `limit` ids, then one conditional
    UPDATE … RETURNING of those still claimable, so two senders never claim the same
    message (on PostgreSQL the second also skips rows the first has locked). Not one
    statement with the SELECT as a subquery: PostgreSQL may run a LIMIT … FOR UPDATE
    subquery again per row and claim more than `limit`. The caller commits the claim
    before sending."""
    if not is_configured():
        return []
    due = (select(OutboxMessage.id)
           .where(OutboxMessage.status.in_(CLAIMABLE), OutboxMessage.next_attempt_at <= now)
           .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
    if db.engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    due_ids = list(db.session.scalars(due))
    if not due_ids:
        return []
    claimed = db.session.scalars(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(due_ids),
               OutboxMessage.status.in_(CLAIMABLE), OutboxMessage.next_attempt_at <= now)
        .values(status="sending", next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
        .returning(OutboxMessage.id)
        .execution_options(synchronize_session=False))
    return sorted(claimed)


@dataclass
class Outgoing:
    """A claimed message as it was loaded (plain values: the job's commits expire nothing
    here and reload nothing)."""
    id: int
    request_id: int | None
    otp_request_id: int | None
    otp_id: int | None
    department_id: int | None
    recipient: str
    subject: str
    body_text: str
    body_html: str
    attempts: int
    is_over: bool  # what it asks about was decided or expired meanwhile


def load_claimed(message_ids: list[int], now: datetime) -> list[Outgoing]:
    """The claimed messages in id order, each with whether its request is over — one query."""
    m = OutboxMessage
    rows = db.session.execute(
        select(m.id, m.request_id, m.otp_request_id, m.otp_id, m.department_id, m.recipient,
               m.subject, m.body_text, m.body_html, m.attempts,
               SessionRequest.status.label("req_status"),
               SessionRequest.expires_at.label("req_expires_at"),
               OtpAccessRequest.status.label("ask_status"),
               OtpAccessRequest.expires_at.label("ask_expires_at"))
        .outerjoin(SessionRequest, SessionRequest.id == m.request_id)
        .outerjoin(OtpAccessRequest, OtpAccessRequest.id == m.otp_request_id)
        .where(m.id.in_(message_ids)).order_by(m.id))
    loaded = []
    for row in rows:
        if row.request_id:
            over = row.req_status != rules.Status.PENDING.value or now >= row.req_expires_at
        elif row.otp_request_id and not row.otp_id:
            over = otp_rules.effective_access_status(row.ask_status, row.ask_expires_at, now) \
                is not otp_rules.AccessStatus.PENDING
        else:
            over = False
        loaded.append(Outgoing(
            id=row.id, request_id=row.request_id, otp_request_id=row.otp_request_id,
            otp_id=row.otp_id, department_id=row.department_id, recipient=row.recipient,
            subject=row.subject, body_text=row.body_text, body_html=row.body_html,
            attempts=row.attempts, is_over=over))
    return loaded


_outbox = OutboxMessage.__table__


@lru_cache(maxsize=None)
def _outcome_update(columns: tuple[str, ...]):
    """The UPDATE that records an outcome setting `columns`, built once per set of
    columns (building one cost about as much as running it)."""
    return (_outbox.update().where(_outbox.c.id == bindparam("message_id"))
            .values({column: bindparam(f"new_{column}") for column in columns}))


# Which list of the report a message goes to, by the status its outcome sets.
_REPORTED = {"sent": "sent", "pending": "retried", "failed": "failed",
             "cancelled": "cancelled"}


class Outcomes:
    """Outcomes waiting to be written, as plain values: (columns set, UPDATE parameters)
    per message, and audit events, in the order they happened; `report` says what
    happened to each message. write() puts them in the session; the caller commits, then
    clear()s — after a failed commit they are still here to write again in a new
    transaction."""

    def __init__(self) -> None:
        self.updates: list[tuple[tuple[str, ...], dict]] = []
        self.events: list[dict] = []
        self.report = DeliveryReport()

    def __len__(self) -> int:
        return len(self.updates)

    def record(self, message: Outgoing, *, status: str, **values) -> None:
        getattr(self.report, _REPORTED[status]).append(message.id)
        values = {"status": status, **values}
        self.updates.append((tuple(values), {
            "message_id": message.id,
            **{f"new_{column}": value for column, value in values.items()}}))

    def write(self) -> None:
        """The rows in id order — one executemany per run of outcomes of one kind — so
        their row locks are taken in the order a cancellation takes them (mail.
        _cancel_where): two transactions locking the same messages can't deadlock."""
        ordered = sorted(self.updates, key=lambda update: update[1]["message_id"])
        for columns, run in groupby(ordered, key=itemgetter(0)):
            db.session.execute(_outcome_update(columns), [values for _, values in run])
        record_events(self.events)

    def clear(self) -> None:
        self.updates, self.events = [], []


def _redacted(message: Outgoing) -> dict:
    return {"body_text": redacted(message.body_text), "body_html": redacted(message.body_html)}


def connect():
    """An open SMTP connection (Flask-Mail's), or the exception that prevented it."""
    connection = mail.connect()
    connection.__enter__()
    return connection


def disconnect(connection) -> None:
    try:
        connection.__exit__(None, None, None)
    except Exception:  # the server hung up first: nothing left to close
        pass


def defer_all(message_ids: list[int], exc: Exception, now: datetime,
              outcomes: Outcomes) -> None:
    """SMTP could not be reached: every claimed message is retried later (or fails)."""
    for message in load_claimed(message_ids, now):
        _retry_or_fail(message, exc, now, outcomes)


@lru_cache(maxsize=64)
def _address(address) -> tuple[str, str]:
    """(the header form, the bare address for the envelope) of a sender or recipient:
    Flask-Mail's sanitizer (IDNA domains, encoded names), once per address."""
    header = sanitize_address(address if isinstance(address, str) else tuple(address))
    return header, parseaddr(header)[1]


def _part(content_type: str, body: str) -> str:
    """One part of the message, CRLF line ends: 7bit when the text is ASCII with no line
    over RFC 5322's 998 characters, else base64 of its UTF-8 (as the standard library's
    MIMEText does for UTF-8)."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    text = CRLF.join(lines)  # the canonical form of text (RFC 2045)
    if body.isascii() and all(len(line) <= MAX_LINE for line in lines):
        encoding, content = "7bit", text
    else:
        encoding = "base64"
        content = base64.encodebytes(text.encode()).decode("ascii").replace("\n", CRLF)
    return (f'Content-Type: {content_type}; charset="utf-8"{CRLF}MIME-Version: 1.0{CRLF}'
            f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}{content}")


def mime_bytes(*, sender: str, recipient: str, subject: str, body_text: str,
               body_html: str, now: datetime) -> bytes:
    """The message as SMTP carries it: multipart/alternative (text, then HTML), UTF-8,
    addresses encoded by Flask-Mail's sanitizer, the subject by the standard library's
    RFC 2047 Header when it is not ASCII, and no header able to hold a line break.

    Written out here rather than through email.mime and its generator, which cost half
    of each delivery's CPU (folding every header, searching each body for its boundary):
    the boundary is 128 random bits, which no text can hold by chance, and every header
    is one we make."""
    subject = one_line(subject)
    if not subject.isascii():
        subject = Header(subject, "utf-8").encode(linesep=CRLF)
    domain = _address(sender)[1].rpartition("@")[2] or "localhost"
    boundary = f"=_{secrets.token_hex(16)}"
    head = CRLF.join((
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "MIME-Version: 1.0",
        f"Subject: {subject}",
        f"From: {_address(sender)[0]}",
        f"To: {_address(one_line(recipient))[0]}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {make_msgid(domain=domain)}",  # no DNS look-up per message
    ))
    return (f"{head}{CRLF}{CRLF}--{boundary}{CRLF}{_part('text/plain', body_text)}{CRLF}"
            f"--{boundary}{CRLF}{_part('text/html', body_html)}{CRLF}"
            f"--{boundary}--{CRLF}").encode("ascii")


def send(connection, message: Outgoing, body_text: str, body_html: str,
         now: datetime) -> None:
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    if not isinstance(sender, str):  # ("Name", "address"), as Flask-Mail allows
        sender = tuple(sender)
    data = mime_bytes(sender=sender, recipient=message.recipient, subject=message.subject,
                      body_text=body_text, body_html=body_html, now=now)
    if connection.host is not None:  # None: MAIL_SUPPRESS_SEND
        connection.host.sendmail(_address(sender)[1],
                                 [_address(one_line(message.recipient))[1]], data)


def deliver_one(message: Outgoing, connection, now: datetime, outcomes: Outcomes) -> None:
    """Send one claimed message, unless its request is over or its one-time password no
    longer works (then it is cancelled)."""
    code = code_of(message, now) if message.otp_id else None
    if message.is_over or (message.otp_id and code is None):
        outcomes.record(message, status="cancelled", **_redacted(message))
        return
    body_text, body_html = message.body_text, message.body_html
    if code is not None:
        body_text = body_text.replace(CODE_PLACEHOLDER, code)
        body_html = body_html.replace(CODE_PLACEHOLDER, code)
    try:
        send(connection, message, body_text, body_html, now)
    except Exception as exc:
        _retry_or_fail(message, exc, now, outcomes)
    else:
        message.attempts += 1
        outcomes.record(message, status="sent", sent_at=now, attempts=message.attempts,
                        last_error=None, **_redacted(message))
        _audit(message, "email.sent", now, outcomes)


def _retry_or_fail(message: Outgoing, exc: Exception, now: datetime,
                   outcomes: Outcomes) -> None:
    message.attempts += 1
    error = f"{type(exc).__name__}: {exc}"[:1000]
    if _permanent(exc) or message.attempts >= MAX_ATTEMPTS:
        outcomes.record(message, status="failed", attempts=message.attempts,
                        last_error=error, **_redacted(message))
        _audit(message, "email.failed", now, outcomes, outcome="failure", error=error)
    else:
        outcomes.record(message, status="pending", attempts=message.attempts,
                        last_error=error, next_attempt_at=now + backoff(message.attempts))


def _audit(message: Outgoing, action: str, now: datetime, outcomes: Outcomes, *,
           outcome: str = "success", **details) -> None:
    if message.request_id:
        target_type, target_id = "session_request", message.request_id
    elif message.otp_request_id:
        target_type, target_id = "otp_request", message.otp_request_id
    else:
        target_type, target_id = "outbox_message", message.id
    # Where a one-time password went is shown masked, as to the device.
    recipient = otp_rules.mask_email(message.recipient) if message.otp_id else message.recipient
    outcomes.events.append({
        "actor": SYSTEM, "action": action, "target_type": target_type,
        "target_id": target_id, "department_id": message.department_id, "now": now,
        "outcome": outcome,
        "details": {"request_id": message.request_id,
                    "otp_request_id": message.otp_request_id, "recipient": recipient,
                    "message_id": message.id, "attempts": message.attempts, **details}})
